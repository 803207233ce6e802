"""K frames of a scan row in one bitshuffle-LZ4 chunk: fewer HDF5 calls per frame.

A bitshuffle-LZ4 chunk (filter 32008) is a 12-byte header (``u64 BE`` uncompressed bytes,
``u32 BE`` block size in bytes) and independent blocks (``u32 BE`` compressed size + data).
When a frame is a whole number of blocks, the blocks of K frames laid end to end under one
header (total = K * frame bytes) are a valid chunk ``(1, K, ny, nx)``: the frames are joined
without recompressing anything, and one ``write_direct_chunk`` stores K frames.

:class:`RowChunker` assembles those chunks, per channel:

- a chunk is written when its K frames (fewer for the edge chunk of a row) are there;
- a chunk still waiting is written with the blocks of an all-zero frame where frames are
  missing when a frame for a new chunk arrives and it has waited more than ``hold`` seconds
  (or more than ``max_pending`` chunks wait), at a flush when it waited more than
  ``flush_seconds``, and at close;
- a frame whose chunk is already in the file (it came late) reopens it: the stored chunk is
  read back (``read_direct_chunk``), the frame's blocks replace the zero blocks at its place and
  the chunk is written again.

Frames are marked written in :class:`Bookkeeping` (the ``written`` mask, ``frames_written``)
only when their chunk is written, so the bookkeeping never claims a frame that is not in the
file; it is kept in RAM and written to ``<image>/frames`` at each flush.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

import bitshuffle  # type: ignore[import-untyped]
import numpy as np

from stemdaq.models import Codec, Frame
from stemdaq.writer.bookkeeping import Bookkeeping
from stemdaq.writer.codecs import BSLZ4_BLOCK_BYTES, decode_chunk, encode_chunk

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">QI")
_U32 = struct.Struct(">I")
#: a waiting chunk is written when a frame for a new chunk arrives after this long (seconds)
HOLD_SECONDS = 0.1
#: at most this many chunks wait per channel; beyond it the oldest is written with its gaps
MAX_PENDING = 16


#: uncompressed bytes of one chunk, at most, when frames share chunks (fits HDF5 2.0's default
#: 8 MiB chunk cache; a reader of one frame decompresses the whole chunk)
MAX_CHUNK_BYTES = 8 << 20


def frames_per_chunk(
    requested: int,
    n_k: int,
    codec: Codec,
    frame_nbytes: int,
    first_payload: Any = None,
) -> tuple[int, str]:
    """Frames per chunk K for a dataset, and why when it is 1 although more were asked for.

    K > 1 only for detector bitshuffle-LZ4 frames whose size is a whole number of
    :data:`BSLZ4_BLOCK_BYTES` blocks (and, when the first frame is given, whose header names
    that block size); K is at most ``n_k`` (a chunk lies within one scan row).
    """
    if requested <= 1:
        return 1, ""
    if codec is not Codec.BSLZ4:
        return 1, f"frames arrive as {codec.value}, not detector bitshuffle-LZ4"
    if frame_nbytes <= 0 or frame_nbytes % BSLZ4_BLOCK_BYTES:
        return 1, (
            f"a frame ({frame_nbytes} bytes) is not a whole number of "
            f"{BSLZ4_BLOCK_BYTES}-byte blocks"
        )
    if first_payload is not None:
        view = memoryview(first_payload).cast("B")
        block = _U32.unpack_from(view, 8)[0] if len(view) >= 12 else -1
        if block != BSLZ4_BLOCK_BYTES:
            return 1, f"the first frame's block size is {block}, not {BSLZ4_BLOCK_BYTES}"
    if n_k <= 1:
        return 1, "scan rows of one position"
    # a single-frame read decompresses the whole chunk: keep chunks to MAX_CHUNK_BYTES
    # (1024x1024 uint32 frames at K=8 would make 32 MiB chunks)
    cap = max(1, MAX_CHUNK_BYTES // frame_nbytes)
    return min(requested, n_k, cap), ""


def zero_frame_blocks(n_elems: int, dtype: np.dtype) -> bytes:
    """The block table (no header) of an all-zero frame of ``n_elems`` elements."""
    zeros = np.zeros(n_elems, dtype=dtype)
    body = bitshuffle.compress_lz4(zeros, BSLZ4_BLOCK_BYTES // dtype.itemsize)
    return bytes(body.tobytes())


def split_frames(chunk: bytes, k: int, blocks_per_frame: int) -> list[memoryview]:
    """Block tables of the ``k`` frames of a stored K-frame chunk (views into ``chunk``).

    Raises
    ------
    ValueError
        The chunk's framing does not hold ``k`` frames of ``blocks_per_frame`` blocks.
    """
    view = memoryview(chunk).cast("B")
    unpack, off, out = _U32.unpack_from, 12, []
    for _ in range(k):
        begin = off
        for _ in range(blocks_per_frame):
            off += 4 + unpack(view, off)[0]
        out.append(view[begin:off])
    if off != len(view):
        raise ValueError(f"stored chunk is {len(view)} bytes, its block table says {off}")
    return out


class _Pending:
    """A chunk being assembled: per slot the new frame's chunk bytes or, reopened, the stored
    block table; the new frames (bookkeeping when written); how many slots hold a frame."""

    __slots__ = ("chunk", "frames", "have", "need", "stored", "t0")

    def __init__(self, k: int, need: int, t0: float) -> None:
        self.chunk: list[Any] = [None] * k
        self.frames: list[Frame | None] = [None] * k
        self.stored: list[memoryview] | None = None
        self.have = 0
        self.need = need
        self.t0 = t0


class RowChunker:
    """Assemble detector bitshuffle-LZ4 frames into ``(1, K, ny, nx)`` chunks (module doc).

    Parameters
    ----------
    k
        Frames per chunk (> 1).
    scan_shape, frame_shape, dtype
        The dataset ``[n_m, n_k, ny, nx]`` and its dtype.
    book
        The writer's bookkeeping: frames are marked in it when their chunk is written.
    dsids
        The intensity dataset (``h5py`` DatasetID) of each channel.
    count_bytes
        Told the size of each chunk written (the writer's sync and free-space accounting).
    hold, max_pending
        When a waiting chunk is written once frames for a new chunk arrive (module doc).
    """

    def __init__(
        self,
        k: int,
        scan_shape: tuple[int, int],
        frame_shape: tuple[int, int],
        dtype: np.dtype,
        book: Bookkeeping,
        dsids: Sequence[Any],
        *,
        count_bytes: Callable[[int], None],
        hold: float = HOLD_SECONDS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        n_m, n_k = scan_shape
        self.k = k
        self._n_k = n_k
        self._per_row = -(-n_k // k)  # chunks per scan row
        self._frame_shape = frame_shape
        self._dtype = dtype
        n_elems = frame_shape[0] * frame_shape[1]
        self._frame_nbytes = n_elems * dtype.itemsize
        self._blocks = self._frame_nbytes // BSLZ4_BLOCK_BYTES
        self._header = _HEADER.pack(k * self._frame_nbytes, BSLZ4_BLOCK_BYTES)
        self._zero = zero_frame_blocks(n_elems, dtype)
        self._book = book
        self._written = book.written
        self._dsids = dsids
        self._count_bytes = count_bytes
        self.hold = hold
        self._max_pending = max(1, max_pending)
        n_ch = len(dsids)
        self._pending: list[dict[int, _Pending]] = [{} for _ in range(n_ch)]
        self._in_file = [bytearray(n_m * self._per_row) for _ in range(n_ch)]
        self._waiting = [bytearray(n_m * self._per_row) for _ in range(n_ch)]  # keys pending
        #: frames waiting in chunks not yet written
        self.pending_frames = 0
        #: chunks written again because a frame came after they were written
        self.rewrites = 0

    def add(self, channel: int, position: int, chunk: Any, frame: Frame, now: float) -> None:
        """Put one frame (bitshuffle-LZ4 bytes, framing checked) into its chunk.

        Writes the chunk when it is complete, and chunks that waited too long when this frame
        starts a new one. If a write raises, this frame is in no waiting chunk.
        """
        if len(chunk) < 12 or _U32.unpack_from(chunk, 8)[0] != BSLZ4_BLOCK_BYTES:
            chunk = self._reframe(chunk)  # raises DecodeError for a payload that is no frame
        m, k = divmod(position, self._n_k)
        c, j = divmod(k, self.k)
        key = m * self._per_row + c
        pending = self._pending[channel]
        p = pending.get(key)
        if p is None:
            if pending:
                self._write_waiting(channel, now)
            p = self._open(channel, key, m, c * self.k, now)
            pending[key] = p
            self._waiting[channel][key] = 1
        if p.chunk[j] is None:
            if p.stored is None or not self._written[channel, position]:
                p.have += 1
            self.pending_frames += 1
        p.chunk[j] = chunk
        p.frames[j] = frame
        if p.have >= p.need:
            del pending[key]
            self._write(channel, key, p)

    def lane_parts(self, channel: int) -> tuple[bytearray, bytearray, bytes, bytes]:
        """For :mod:`stemdaq.rank.lane`: per chunk whether it is in the file and whether it
        waits here (bytearrays kept current), the chunk header and an all-zero frame's blocks."""
        return self._in_file[channel], self._waiting[channel], self._header, self._zero

    def store_full(self, channel: int, position: int, data: Any, nbytes: int, now: float) -> None:
        """Write a full chunk of ``nbytes`` that starts at scan ``position``, joined elsewhere
        (the in-order lane: it marks the bookkeeping itself); then chunks that waited too long."""
        m, k0 = divmod(position, self._n_k)
        self._put(channel, m, k0, data, nbytes)
        if self._pending[channel]:
            self._write_waiting(channel, now)

    def _put(self, channel: int, m: int, k0: int, data: Any, nbytes: int) -> None:
        """Write the chunk at scan row ``m``, column ``k0``; it is in the file, waits no more."""
        key = m * self._per_row + k0 // self.k
        self._waiting[channel][key] = 0
        self._dsids[channel].write_direct_chunk((m, k0, 0, 0), data)
        self._in_file[channel][key] = 1
        self._count_bytes(nbytes)

    def _open(self, channel: int, key: int, m: int, k0: int, now: float) -> _Pending:
        """A new waiting chunk; a chunk already in the file is read back (a late frame)."""
        p = _Pending(self.k, min(self.k, self._n_k - k0), now)
        if self._in_file[channel][key]:
            mask, stored = self._dsids[channel].read_direct_chunk((m, k0, 0, 0))
            if mask:
                raise OSError(f"chunk ({m}, {k0}) is stored without its filter (mask {mask})")
            p.stored = split_frames(stored, self.k, self._blocks)
            pos0 = m * self._n_k + k0
            p.have = int(np.count_nonzero(self._written[channel, pos0 : pos0 + p.need]))
        return p

    def _reframe(self, chunk: Any) -> bytes:
        """A frame compressed with another block size, recompressed with the dataset's."""
        arr = decode_chunk(chunk, Codec.BSLZ4, self._frame_shape, self._dtype)
        out = encode_chunk(arr, "bslz4")
        if not isinstance(out, bytes):  # pragma: no cover - bslz4 always gives bytes
            raise TypeError("bslz4 encoder returned no bytes")
        return out

    def _write_waiting(self, channel: int, now: float) -> None:
        """Write the oldest waiting chunks while they waited more than ``hold`` or too many wait."""
        pending = self._pending[channel]
        while pending:
            key = next(iter(pending))
            p = pending[key]
            if now - p.t0 < self.hold and len(pending) < self._max_pending:
                return
            del pending[key]
            self._write(channel, key, p)

    def write_due(self, now: float, older_than: float) -> None:
        """Write the chunks (with their gaps) that have waited ``older_than`` seconds or more."""
        for channel, pending in enumerate(self._pending):
            while pending:
                key = next(iter(pending))
                p = pending[key]
                if now - p.t0 < older_than:
                    break
                del pending[key]
                self._write(channel, key, p)

    def write_all(self) -> None:
        """Write every waiting chunk (with its gaps): at close."""
        for channel, pending in enumerate(self._pending):
            while pending:
                key = next(iter(pending))
                self._write(channel, key, pending.pop(key))

    def _write(self, channel: int, key: int, p: _Pending) -> None:
        """Join the chunk (zero blocks for missing frames), write it, mark its new frames."""
        parts: list[Any] = [self._header]
        zero, stored = self._zero, p.stored
        for j, chunk in enumerate(p.chunk):
            if chunk is not None:
                parts.append(memoryview(chunk).cast("B")[12:])
            elif stored is not None:
                parts.append(stored[j])
            else:
                parts.append(zero)
        m, c = divmod(key, self._per_row)
        k0 = c * self.k
        new = sum(1 for f in p.frames if f is not None)
        self.pending_frames -= new
        if stored is not None:
            self.rewrites += 1
        data = b"".join(parts)
        self._put(channel, m, k0, data, len(data))
        self._book.mark_run(channel, m * self._n_k + k0, p.frames)
