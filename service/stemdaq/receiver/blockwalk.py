"""The walk over a compressed chunk's block sizes: the heart of the framing check.

A bitshuffle-LZ4 or LZ4 HDF5 chunk is a 12-byte header and blocks, each a big-endian u32
compressed size and that many bytes (:mod:`stemdaq.receiver.framing`). :func:`walk` follows
``n`` sizes from ``start`` and returns the offset after the last block, or -1 when a size is 0,
above ``bound`` or lies past the end of the buffer; the caller compares the offset with the
payload's end.

It runs once per detector-compressed frame, so it is compiled where it can be
(``stemdaq._hotpath``, built with the package when a C compiler is there): measured
(``bench/walk.py``), a 192x192 uint16 frame (9 blocks) 0.81 -> 0.08 us, 512x512 (64 blocks)
4.9 -> 0.36 us, 1024x1024 uint32 (512 blocks) 79 -> 5.6 us. :func:`walk_python` is the same walk
in Python: the reference in tests, and the fallback where the extension was not built
(:data:`COMPILED` says which one runs). :data:`image` is the extension's other function, the
stream v2 fast path's read of a usual image (:mod:`stemdaq.receiver.fast2`), None where it was
not built; it is handed out here so that one import decides whether the extension is there.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

_U32 = struct.Struct(">I")


def walk_python(buf: Any, start: int, n: int, bound: int) -> int:
    """The offset after ``n`` blocks from ``start``, or -1 (see the module docstring)."""
    if start < 0 or n < 0:
        return -1
    unpack = _U32.unpack_from
    at = start
    try:  # unpack_from raises struct.error past the end: no bounds check per block
        for _ in range(n):
            (size,) = unpack(buf, at)
            if not 0 < size <= bound:
                return -1
            at += 4 + size
    except struct.error:
        return -1
    return at


try:
    from stemdaq._hotpath import image as _image
    from stemdaq._hotpath import walk as _compiled
except ImportError:  # built without a C compiler: the Python walk, same results
    _compiled = _image = None

#: True when the extension was built: the compiled walk (and image read) run
COMPILED = _compiled is not None
#: what the service says at start when it runs the Python walk (or lacks stemdaq._lane)
BUILT_WITHOUT_C = (
    "the per-frame block walk, stream v2 image read and in-order lane run in Python: stemdaq "
    "was installed without a C compiler (measured: the data thread's CPU per 192x192 frame "
    "about doubles, 15 -> 30 us, and up to ~25 % fewer frames/s for 512x512 and larger "
    "frames; reinstall with one)"
)
walk: Callable[[Any, int, int, int], int] = _compiled if _compiled is not None else walk_python
#: the stream v2 fast path's read of a usual image in C (``stemdaq.receiver.fast2``), or None
ImageRead = Callable[[Any, tuple[Any, ...], tuple[Any, ...]], tuple[int, int, int, int, int] | None]
image: ImageRead | None = _image
