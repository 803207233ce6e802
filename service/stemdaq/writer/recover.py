"""Make a ``.partial`` file left by a killed writer openable by every HDF5 tool.

A SWMR writer marks the superblock "open for writing". After ``kill -9`` the mark stays: SWMR
readers (``h5py.File(p, "r", swmr=True)``) still open the file and see every flushed frame, but a
plain open fails with "file is already open for write (may use <h5clear file> ...)".
:func:`clear_status_flags` does what ``h5clear -s`` does (HDF5's command-line tools are not
shipped with h5py): zero the superblock's status flags and fix its checksum.
"""

from __future__ import annotations

import struct
from pathlib import Path

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5 metadata."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M32
    off = 0
    while n - off > 12:
        x, y, z = struct.unpack_from("<III", data, off)
        a, b, c = (a + x) & _M32, (b + y) & _M32, (c + z) & _M32
        a = (a - c) & _M32
        a ^= _rot(c, 4)
        c = (c + b) & _M32  # noqa: E702
        b = (b - a) & _M32
        b ^= _rot(a, 6)
        a = (a + c) & _M32  # noqa: E702
        c = (c - b) & _M32
        c ^= _rot(b, 8)
        b = (b + a) & _M32  # noqa: E702
        a = (a - c) & _M32
        a ^= _rot(c, 16)
        c = (c + b) & _M32  # noqa: E702
        b = (b - a) & _M32
        b ^= _rot(a, 19)
        a = (a + c) & _M32  # noqa: E702
        c = (c - b) & _M32
        c ^= _rot(b, 4)
        b = (b + a) & _M32  # noqa: E702
        off += 12
    rest = data[off:]
    if not rest:
        return c
    x, y, z = struct.unpack("<III", rest.ljust(12, b"\0"))
    a, b, c = (a + x) & _M32, (b + y) & _M32, (c + z) & _M32
    c ^= b
    c = (c - _rot(b, 14)) & _M32  # noqa: E702
    a ^= c
    a = (a - _rot(c, 11)) & _M32  # noqa: E702
    b ^= a
    b = (b - _rot(a, 25)) & _M32  # noqa: E702
    c ^= b
    c = (c - _rot(b, 16)) & _M32  # noqa: E702
    a ^= c
    a = (a - _rot(c, 4)) & _M32  # noqa: E702
    b ^= a
    b = (b - _rot(a, 14)) & _M32  # noqa: E702
    c ^= b
    c = (c - _rot(b, 24)) & _M32  # noqa: E702
    return c


def clear_status_flags(path: Path | str) -> bool:
    """Zero the superblock status flags (``h5clear -s``). True if they were set.

    Only superblock versions 2 and 3 (``libver="latest"`` files, as stemdaq writes) have
    these flags with a checksum; others are left alone. Do not use on a file still being
    written.

    Raises
    ------
    ValueError
        Not an HDF5 file, or its superblock checksum is wrong (nothing is changed then).
    """
    with open(path, "r+b") as fh:
        head = fh.read(8 + 4 + 4 * 8 + 4)
        if not head.startswith(_SIGNATURE):
            raise ValueError(f"{path}: not an HDF5 file (or user block present)")
        version, size_offsets = head[8], head[9]
        if version not in (2, 3):
            return False
        end = 12 + 4 * size_offsets
        fh.seek(0)
        block = fh.read(end + 4)
        (stored,) = struct.unpack_from("<I", block, end)
        if lookup3(block[:end]) != stored:
            raise ValueError(f"{path}: superblock checksum mismatch, not touching it")
        if block[11] == 0:
            return False
        fixed = block[:11] + b"\0" + block[12:end]
        fh.seek(0)
        fh.write(fixed + struct.pack("<I", lookup3(fixed)))
        fh.flush()
    return True
