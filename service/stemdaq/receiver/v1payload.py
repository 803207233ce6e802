"""A stream v1 image's data part: what its ``dimage_d`` part says it is, checked.

Shape ``[x, y]``, pixel type, size and encoding (``<``/``>`` raw, ``lz4<``/``lz4>``,
``bsNN-lz4<``/``bsNN-lz4>``) are read from the ``dimage_d`` part; little-endian data go on as
they are (a bare LZ4 block with the HDF5 header it lacks), big-endian data are decoded and
swapped to little-endian raw (no DCU is known to send them). :func:`check_md5` compares the
data with the ``hash`` of a ``dimage`` part.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable
from typing import Any

import bitshuffle
import lz4.block
import numpy as np

from stemdaq.errors import DecodeError
from stemdaq.models import Codec
from stemdaq.receiver.framing import check_bslz4, lz4_hdf5_frame
from stemdaq.receiver.metadata import DTYPE_SIZES, plain

_ENCODING = re.compile(r"^(?:bs(8|16|32)-?)?(lz4)?([<>])$")


def data_part(
    desc: dict[str, Any], blob: memoryview, walk_blocks: bool, quirk: Callable[[str], None]
) -> tuple[tuple[int, int], str, Codec, Any]:
    """The frame a ``dimage_d`` part describes in ``blob``: (shape (y, x), dtype, codec, payload).

    Raw and detector-compressed little-endian data are passed on (bitshuffle-LZ4 framing
    checked, a bare LZ4 block given its HDF5 header); big-endian data are decoded and swapped
    to little-endian raw, counted by ``quirk``.

    Raises
    ------
    DecodeError
        ``malformed`` (shape) or ``corrupt`` (type, size, encoding, framing, decompression).
    """
    shape, dtype, encoding = desc.get("shape"), desc.get("type"), desc.get("encoding")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or type(shape[0]) is not int
        or type(shape[1]) is not int
        or shape[0] <= 0
        or shape[1] <= 0
        or max(shape) > 1 << 16
    ):
        raise DecodeError("malformed", f"dimage_d shape {plain(shape)!r:.60} is not [x, y]")
    if dtype not in DTYPE_SIZES:
        raise DecodeError("corrupt", f"unsupported pixel type {plain(dtype)!r:.40}")
    nx, ny = shape  # [x(width), y(height)] -> numpy (y, x)
    itemsize = DTYPE_SIZES[dtype]
    nbytes = nx * ny * itemsize
    size = desc.get("size")
    if size is not None and size != len(blob):
        raise DecodeError(
            "corrupt", f"dimage_d size {plain(size)!r:.20} != data part of {len(blob)} bytes"
        )
    match = _ENCODING.match(encoding) if isinstance(encoding, str) else None
    if match is None:
        raise DecodeError("corrupt", f"unsupported encoding {plain(encoding)!r:.40}")
    bits, lz4_flag, order = match.groups()
    if bits and not lz4_flag:
        raise DecodeError("corrupt", f"bitshuffle without lz4 ({encoding!r}) is not supported")
    if not lz4_flag:  # raw
        if len(blob) != nbytes:
            raise DecodeError(
                "corrupt",
                f"raw data part has {len(blob)} bytes, {ny}x{nx} {dtype} needs {nbytes}",
            )
        if order == ">":
            quirk("big_endian_raw")
            return (ny, nx), dtype, Codec.RAW, _to_little(blob, dtype)
        return (ny, nx), dtype, Codec.RAW, blob
    if bits:
        check_bslz4(blob, nbytes, itemsize, walk_blocks)
        if order == ">":
            quirk("big_endian_bslz4")
            return (ny, nx), dtype, Codec.RAW, _bslz4_to_little(blob, (ny, nx), dtype)
        return (ny, nx), dtype, Codec.BSLZ4, blob
    if order == ">":
        quirk("big_endian_lz4")
        try:
            data = lz4.block.decompress(blob, uncompressed_size=nbytes)
        except Exception as exc:
            raise DecodeError("corrupt", f"lz4 block does not decompress: {exc}") from None
        if len(data) != nbytes:
            raise DecodeError(
                "corrupt", f"lz4 block decompresses to {len(data)} bytes, not {nbytes}"
            )
        return (ny, nx), dtype, Codec.RAW, _to_little(data, dtype)
    return (ny, nx), dtype, Codec.LZ4, lz4_hdf5_frame(blob, nbytes)


def check_md5(blob: memoryview, expected: Any) -> None:
    """Compare the data part with the ``hash`` of its dimage part (md5 hex), when one is given."""
    if not isinstance(expected, str) or len(expected) != 32:
        return
    if hashlib.md5(blob).hexdigest() != expected.lower():
        raise DecodeError("corrupt", "data part does not match its md5 hash")


def _to_little(buf: bytes | memoryview, dtype: str) -> bytes:
    big = np.dtype(dtype).newbyteorder(">")
    return np.frombuffer(buf, dtype=big).astype(np.dtype(dtype).newbyteorder("<")).tobytes()


def _bslz4_to_little(blob: memoryview, shape: tuple[int, int], dtype: str) -> bytes:
    (block,) = struct.unpack_from(">I", blob, 8)
    itemsize = DTYPE_SIZES[dtype]
    try:
        arr = bitshuffle.decompress_lz4(
            np.frombuffer(blob, dtype=np.uint8, offset=12),
            shape,
            np.dtype(dtype).newbyteorder(">"),
            block // itemsize,
        )
    except Exception as exc:
        raise DecodeError("corrupt", f"bslz4 data do not decompress: {exc}") from None
    return arr.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
