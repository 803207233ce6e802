"""Payload framings a DECTRIS detector puts on the wire (see the reference notes, section B.1).

- ``bslz4``: bitshuffle + LZ4 in the HDF5 bitshuffle-filter framing (12-byte header
  ``u64 BE nbytes, u32 BE block bytes``, then per block ``u32 BE size`` + LZ4 block). Used by
  stream v2 tag 56500 ``"bslz4"`` and stream v1 ``bsNN-lz4<``.
- ``lz4``: the HDF5 LZ4 filter framing (``u64 BE nbytes, u32 BE block bytes``, then per block
  ``u32 BE size`` + LZ4 block, stored raw when LZ4 does not shrink it). Used by stream v2 ``"lz4"``.
- bare LZ4 block, no header: stream v1 ``lz4<``.
"""

from __future__ import annotations

import struct
from typing import Any

import bitshuffle  # type: ignore[import-untyped]
import lz4.block  # type: ignore[import-untyped]
import numpy as np

BSLZ4_BLOCK_BYTES = 8192  # what DECTRIS detectors use (seen in captured EIGER2 messages)
_HEADER = struct.Struct(">QI")
_U32 = struct.Struct(">I")


def bslz4(frame: np.ndarray) -> bytes:
    """Bitshuffle-LZ4 with the HDF5 filter's 12-byte header (element size = dtype size)."""
    arr = np.ascontiguousarray(frame)
    block_elems = BSLZ4_BLOCK_BYTES // arr.dtype.itemsize
    body = bitshuffle.compress_lz4(arr.reshape(-1), block_elems)
    return _HEADER.pack(arr.nbytes, BSLZ4_BLOCK_BYTES) + body.tobytes()


def lz4_hdf5(data: bytes | memoryview | np.ndarray, block_bytes: int | None = None) -> bytes:
    """LZ4 in the HDF5 LZ4 filter (32004) framing; one block per frame by default."""
    raw = _bytes_view(data)
    n = raw.nbytes
    block = block_bytes or max(1, n)
    out = [_HEADER.pack(n, block)]
    for off in range(0, n, block):
        chunk = raw[off : off + block]
        packed = lz4.block.compress(chunk, store_size=False)
        if len(packed) >= len(chunk):  # the filter stores incompressible blocks raw
            packed = bytes(chunk)
        out.append(_U32.pack(len(packed)))
        out.append(packed)
    return b"".join(out)


def lz4_bare(data: bytes | memoryview | np.ndarray) -> bytes:
    """One bare LZ4 block, no header (stream v1 ``lz4<``)."""
    return lz4.block.compress(_bytes_view(data), store_size=False)


def _bytes_view(data: bytes | memoryview | np.ndarray) -> memoryview:
    if isinstance(data, np.ndarray):
        flat: Any = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        return memoryview(flat)
    return memoryview(data).cast("B")


def frame_payload(frame: np.ndarray, compression: str, *, bare_lz4: bool = False) -> bytes:
    """Encode one frame for the wire: ``bslz4``, ``lz4`` (HDF5 framing or bare) or ``none``."""
    if compression == "bslz4":
        return bslz4(frame)
    if compression == "lz4":
        return lz4_bare(frame) if bare_lz4 else lz4_hdf5(frame)
    if compression == "none":
        return (
            np.ascontiguousarray(frame).astype(frame.dtype.newbyteorder("<"), copy=False).tobytes()
        )
    raise ValueError(f"unknown compression {compression!r}")
