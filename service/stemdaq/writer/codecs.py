"""Chunk encoders/decoders in the exact byte framing of the HDF5 filters (no h5py in here).

Everything in this module is thread-safe and spends its time in C code that releases the GIL
(bitshuffle, lz4, zstandard, zlib), so a thread pool can encode raw frames on all cores while
the writer thread does the HDF5 calls.

Framings (what :meth:`h5py.h5d.DatasetID.write_direct_chunk` must be given):

``bslz4`` (filter 32008, bitshuffle + LZ4)
    12-byte header ``u64 BE`` uncompressed bytes, ``u32 BE`` block size in *bytes*, then per
    block ``u32 BE`` compressed size + LZ4 block (exactly what ``bitshuffle.compress_lz4``
    returns); a tail of fewer than 8 elements is stored raw.
``lz4`` (filter 32004)
    ``u64 BE`` uncompressed bytes, ``u32 BE`` block size, then per block ``u32 BE`` size + LZ4
    block; a block LZ4 cannot shrink is stored raw (its size equals the block size).
``zstd`` (filter 32015)
    one plain zstd frame.
``gzip`` (deflate filter 1)
    one zlib stream (RFC 1950, with header and adler32).
``none``
    the raw little-endian bytes.
``blosc`` (filter 32001)
    no Python encoder of the blosc1 chunk format is a dependency: :func:`encode_chunk` returns
    the array itself and the writer stores it through the HDF5 filter pipeline.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import bitshuffle  # type: ignore[import-untyped]
import hdf5plugin
import lz4.block  # type: ignore[import-untyped]
import numpy as np
import zstandard

from stemdaq.errors import DecodeError
from stemdaq.models import Codec

#: bitshuffle block size used for frames we compress (bytes); DECTRIS detectors use the same
BSLZ4_BLOCK_BYTES = 8192
#: LZ4 block size for frames we compress: one block per frame up to this size
LZ4_BLOCK_BYTES = 1 << 30
_HEADER = struct.Struct(">QI")
_U32 = struct.Struct(">I")
_BSHUF_MULT = 8  # bitshuffle compresses whole multiples of 8 elements; the tail is copied

#: dataset filter per compression name (h5py ``create_dataset`` keyword arguments)
COMPRESSIONS = ("bslz4", "lz4", "zstd", "blosc", "gzip", "none")


def filter_kwargs(compression: str, level: int | None = None) -> dict[str, Any]:
    """``create_dataset`` keyword arguments of the HDF5 filter for ``compression``."""
    if compression == "bslz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if compression == "lz4":
        return dict(hdf5plugin.LZ4())
    if compression == "zstd":
        return dict(hdf5plugin.Zstd(clevel=3 if level is None else max(1, min(level, 22))))
    if compression == "blosc":
        return dict(
            hdf5plugin.Blosc(
                cname="lz4",
                clevel=5 if level is None else min(level, 9),
                shuffle=hdf5plugin.Blosc.SHUFFLE,
            )
        )
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4 if level is None else min(level, 9)}
    if compression == "none":
        return {}
    raise ValueError(f"unknown compression {compression!r}; one of {', '.join(COMPRESSIONS)}")


def _as_bytes(arr: np.ndarray) -> memoryview:
    flat = np.ascontiguousarray(arr)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    return memoryview(flat.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def encode_chunk(arr: np.ndarray, compression: str, level: int | None = None) -> bytes | np.ndarray:
    """Encode one frame as the chunk bytes of ``compression``'s HDF5 filter.

    Returns the array itself (C-contiguous) for ``blosc``, which must go through the filter
    pipeline. Releases the GIL for the compression itself; safe to call from any thread.
    """
    if compression == "bslz4":
        a = np.ascontiguousarray(arr)
        block_elems = BSLZ4_BLOCK_BYTES // a.dtype.itemsize
        body = bitshuffle.compress_lz4(a.reshape(-1), block_elems)
        return _HEADER.pack(a.nbytes, BSLZ4_BLOCK_BYTES) + body.tobytes()
    if compression == "lz4":
        return lz4_frame(_as_bytes(arr))
    if compression == "zstd":
        cctx = zstandard.ZstdCompressor(level=3 if level is None else max(1, min(level, 22)))
        return cctx.compress(_as_bytes(arr))
    if compression == "gzip":
        return zlib.compress(_as_bytes(arr), 4 if level is None else min(level, 9))
    if compression == "none":
        return _as_bytes(arr).tobytes()
    if compression == "blosc":
        return np.ascontiguousarray(arr)
    raise ValueError(f"unknown compression {compression!r}; one of {', '.join(COMPRESSIONS)}")


def lz4_frame(raw: memoryview | bytes, block_bytes: int = LZ4_BLOCK_BYTES) -> bytes:
    """``raw`` in the HDF5-LZ4 filter framing (blocks LZ4 cannot shrink are stored raw)."""
    view = memoryview(raw).cast("B")
    n = view.nbytes
    block = min(block_bytes, max(1, n))
    parts = [_HEADER.pack(n, block)]
    for off in range(0, n, block):
        piece = view[off : off + block]
        packed = lz4.block.compress(piece, store_size=False)
        if len(packed) >= len(piece):
            packed = piece.tobytes()
        parts.append(_U32.pack(len(packed)))
        parts.append(packed)
    return b"".join(parts)


def check_framing(payload: bytes | memoryview, codec: Codec, nbytes: int, itemsize: int) -> None:
    """Walk the block table of a BSLZ4/LZ4 payload; raise ``DecodeError('corrupt')`` if wrong.

    Cheap (a few struct reads per frame): used on pre-compressed frames that go to the file
    unchanged, so that a broken chunk never makes the dataset unreadable.
    """
    view = memoryview(payload).cast("B") if not isinstance(payload, bytes) else payload
    size = len(view)
    if codec is Codec.RAW:
        if size != nbytes:
            raise DecodeError("corrupt", f"raw payload has {size} bytes, frame needs {nbytes}")
        return
    if size < 12:
        raise DecodeError("corrupt", f"{codec.value} payload of {size} bytes has no header")
    total, block = _HEADER.unpack_from(view, 0)
    if total != nbytes:
        raise DecodeError(
            "corrupt", f"{codec.value} header says {total} bytes, frame needs {nbytes}"
        )
    if block <= 0:
        raise DecodeError("corrupt", f"{codec.value} header has block size {block}")
    off, remaining, tail = 12, nbytes, 0
    if codec is Codec.BSLZ4:
        if block % itemsize:
            raise DecodeError(
                "corrupt", f"bslz4 block size {block} is not a multiple of {itemsize}"
            )
        n_elems = nbytes // itemsize
        block_elems = block // itemsize
        last = (n_elems % block_elems) - (n_elems % block_elems) % _BSHUF_MULT
        remaining = (n_elems // block_elems) * block_elems * itemsize + last * itemsize
        tail = nbytes - remaining
    unpack = _U32.unpack_from
    while remaining > 0:
        if off + 4 > size:
            raise DecodeError("corrupt", f"{codec.value} payload truncated at byte {off}")
        (csize,) = unpack(view, off)
        off += 4 + csize
        remaining -= block
    off += tail
    if off != size:
        raise DecodeError("corrupt", f"{codec.value} payload is {size} bytes, framing says {off}")


def decode_chunk(
    payload: bytes | memoryview, codec: Codec, shape: tuple[int, ...], dtype: Any
) -> np.ndarray:
    """Decode one stream payload (RAW, BSLZ4 or LZ4 with HDF5 framing) to an array.

    Raises
    ------
    DecodeError
        ``reason == "corrupt"`` when the length or the framing is wrong.
    """
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dt.itemsize
    check_framing(payload, codec, nbytes, dt.itemsize)
    buf = np.frombuffer(payload, dtype=np.uint8)
    try:
        if codec is Codec.RAW:
            return buf.view(dt.newbyteorder("<")).reshape(shape)
        _, block = _HEADER.unpack_from(payload, 0)
        if codec is Codec.BSLZ4:
            out = bitshuffle.decompress_lz4(buf[12:], tuple(shape), dt, block // dt.itemsize)
            return np.asarray(out)
        return np.frombuffer(
            _lz4_blocks(memoryview(payload).cast("B"), nbytes, block), dtype=dt
        ).reshape(shape)
    except DecodeError:
        raise
    except Exception as exc:  # lz4/bitshuffle errors: bad compressed data
        raise DecodeError("corrupt", f"{codec.value} payload does not decompress: {exc}") from None


def _lz4_blocks(view: memoryview, nbytes: int, block: int) -> bytes:
    out, off, left = [], 12, nbytes
    while left > 0:
        want = min(block, left)
        (csize,) = _U32.unpack_from(view, off)
        piece = view[off + 4 : off + 4 + csize]
        if csize == want:
            out.append(piece.tobytes())
        else:
            out.append(lz4.block.decompress(piece, uncompressed_size=want))
        off += 4 + csize
        left -= want
    data = b"".join(out)
    if len(data) != nbytes:
        raise DecodeError("corrupt", f"lz4 payload decodes to {len(data)} bytes, expected {nbytes}")
    return data
