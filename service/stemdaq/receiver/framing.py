"""HDF5 filter framing of compressed frames: cheap checks and the LZ4 header that v1 lacks.

Both framings start with ``u64 BE orig_size, u32 BE block_size`` (dectris/compression, the
HDF5 filters 32008 and 32004):

- **bitshuffle-LZ4** (stream v2 ``bslz4``, stream v1 ``bsNN-lz4<``): ``block_size`` is in bytes,
  a multiple of ``8 * elem_size``; one ``u32 BE compressed_size`` + LZ4 block per full block,
  one for the last partial block (``orig % block - leftover`` bytes, if not empty), then
  ``leftover = orig % (8 * elem_size)`` bytes copied raw.
- **LZ4** (stream v2 ``lz4``, HDF5 filter 32004): ``ceil(orig / block)`` blocks, each
  ``u32 BE compressed_size`` + block; a block with ``compressed_size == block length`` is
  stored raw.

The checks never decompress: they read the headers and walk the block sizes
(:mod:`stemdaq.receiver.blockwalk`: ~0.01 us a block compiled, ~0.1 us in Python), which
catches truncation, wrong sizes and garbage, not bit flips inside a block.
"""

from __future__ import annotations

import struct
from typing import NoReturn

import lz4.block

from stemdaq.errors import DecodeError
from stemdaq.receiver.blockwalk import walk as walk_blocks

_HEADER = struct.Struct(">QI")
_U32 = struct.Struct(">I")
_LZ4_HEADER = struct.Struct(">QII")

#: upper bound accepted for a block size field (bitshuffle's default is 8192 bytes)
MAX_BLOCK_SIZE = 1 << 30

_CORRUPT = "corrupt"


def lz4_bound(n: int) -> int:
    """Worst-case LZ4 block size for ``n`` input bytes (``LZ4_COMPRESSBOUND``)."""
    return n + n // 255 + 16


def check_bslz4(
    buf: bytes | memoryview, expected_nbytes: int, elem_size: int, walk: bool = True
) -> None:
    """Check a bitshuffle-LZ4 HDF5 chunk without decompressing it.

    Raises
    ------
    DecodeError
        (``corrupt``) on a short header, a size that is not ``expected_nbytes``, an invalid block
        size or (``walk``) block sizes that do not add up to the buffer length.
    """
    n = len(buf)
    if n < 12:
        raise DecodeError(
            _CORRUPT, f"bslz4 payload of {n} bytes is shorter than its 12-byte header"
        )
    orig, block = _HEADER.unpack_from(buf, 0)
    if orig != expected_nbytes:
        raise DecodeError(
            _CORRUPT, f"bslz4 header says {orig} bytes, frame needs {expected_nbytes}"
        )
    mult = 8 * elem_size
    if block == 0 or block % mult or block > MAX_BLOCK_SIZE:
        raise DecodeError(
            _CORRUPT, f"bslz4 block size {block} is not a positive multiple of {mult}"
        )
    if not walk:
        return
    n_full, rest = divmod(orig, block)
    leftover = orig % mult
    bound = block + block // 255 + 16  # lz4_bound(block), inlined: this runs once per frame
    n_blocks = n_full if rest <= leftover else n_full + 1
    pos = walk_blocks(buf, 12, n_blocks, bound)
    if pos < 0:  # say where: the walk again, in Python (a corrupt frame, not the usual case)
        _walk_fault(buf, "bslz4", [(n_blocks, bound)])
    if pos + leftover != n:
        raise DecodeError(_CORRUPT, f"bslz4 blocks end at byte {pos + leftover}, payload has {n}")


def check_lz4_hdf5(buf: bytes | memoryview, expected_nbytes: int, walk: bool = True) -> None:
    """Check an HDF5-LZ4 (filter 32004) chunk without decompressing it.

    Raises
    ------
    DecodeError
        (``corrupt``) as :func:`check_bslz4`.
    """
    n = len(buf)
    if n < 12:
        raise DecodeError(_CORRUPT, f"lz4 payload of {n} bytes is shorter than its 12-byte header")
    orig, block = _HEADER.unpack_from(buf, 0)
    if orig != expected_nbytes:
        raise DecodeError(_CORRUPT, f"lz4 header says {orig} bytes, frame needs {expected_nbytes}")
    if block == 0 or block > MAX_BLOCK_SIZE:
        raise DecodeError(_CORRUPT, f"lz4 block size {block} is invalid")
    if not walk:
        return
    n_full, rest = divmod(orig, block)
    plan = [(n_full, block + block // 255 + 16)]
    if rest:
        plan.append((1, lz4_bound(rest)))
    pos = 12
    for blocks, bound in plan:
        pos = walk_blocks(buf, pos, blocks, bound)
        if pos < 0:
            _walk_fault(buf, "lz4", plan)
    if pos != n:
        raise DecodeError(_CORRUPT, f"lz4 blocks end at byte {pos}, payload has {n}")


def _walk_fault(buf: bytes | memoryview, codec: str, plan: list[tuple[int, int]]) -> NoReturn:
    """Raise the DecodeError that says where the block walk failed: the walk again, in Python,
    from byte 12, per ``(blocks, bound)`` of ``plan`` that many blocks of at most ``bound``."""
    unpack, n, pos = _U32.unpack_from, len(buf), 12
    try:
        for blocks, bound in plan:
            for _ in range(blocks):
                (size,) = unpack(buf, pos)
                if not 0 < size <= bound:
                    raise DecodeError(
                        _CORRUPT, f"{codec} block at byte {pos} has invalid size {size}"
                    )
                pos += 4 + size
    except struct.error:
        raise DecodeError(_CORRUPT, f"{codec} payload truncated at byte {pos} of {n}") from None
    raise DecodeError(_CORRUPT, f"{codec} block table unreadable ({n} bytes)")  # pragma: no cover


def lz4_hdf5_frame(block: bytes | memoryview, orig_size: int) -> bytes:
    """Wrap one bare LZ4 block (stream v1 ``lz4<``) in single-block HDF5-LZ4 framing.

    The result is ``u64 BE orig_size, u32 BE block_size = orig_size, u32 BE compressed_size``
    followed by the block (ADCore's layout), ready for a direct chunk write with filter 32004.
    A block exactly ``orig_size`` long would read as *stored raw* to the HDF5 filter, so it is
    decompressed and stored raw instead (same framing, same decoded content).

    Raises
    ------
    DecodeError
        (``corrupt``) if the block is empty or longer than LZ4 allows for ``orig_size`` bytes,
        or (only in the raw-storage case) does not decompress to ``orig_size`` bytes.
    """
    size = len(block)
    if orig_size <= 0 or size == 0 or size > lz4_bound(orig_size):
        raise DecodeError(_CORRUPT, f"lz4 block of {size} bytes cannot hold {orig_size} bytes")
    if size == orig_size:
        try:
            block = lz4.block.decompress(block, uncompressed_size=orig_size)
        except Exception as exc:
            raise DecodeError(_CORRUPT, f"lz4 block does not decompress: {exc}") from None
        if len(block) != orig_size:
            raise DecodeError(
                _CORRUPT, f"lz4 block decompresses to {len(block)} bytes, not {orig_size}"
            )
    return _LZ4_HEADER.pack(orig_size, orig_size, size) + bytes(block)
