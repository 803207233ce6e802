"""The in-order lane: one C call per usual frame, the Python path for everything else.

While a series streams usual images (stream v2: the layout :mod:`stemdaq.receiver.fast2` read
last, one channel; stream v1: the parts :mod:`stemdaq.receiver.fast1` read last, as patterns
with the frame number, data size and times as holes) in scan order into K-frame chunks, the
data thread's Python work per frame (decode, place, hand to the chunk assembler, count) is the
same every time. ``Lane.push`` (``stemdaq._lane``, C) does it in one call: it reads the message
(v2 as the fast decoder's C read does: sections, integers, payload header, block walk; v1 with
the patterns, then the same walk), takes the frame only if its scan position
is new and is the next slot of the chunk being filled, or the first slot of a chunk neither in the
file nor waiting in :class:`~stemdaq.writer.chunking.RowChunker`, marks the position placed and
copies the frame's blocks into the chunk. When the chunk is full, :meth:`InOrderLane.done` writes
it (one ``write_direct_chunk``), marks its frames in the bookkeeping and counts them.

Everything else goes the Python path, which stays the reference: a message the lane does not take
first makes it hand the frames of its chunk to the Python path (:meth:`InOrderLane.leave`), so the
Python path sees every frame in arrival order, and after that message the lane is armed again only
if every condition holds anew (:meth:`InOrderLane.rearm`: file open, no write error, nothing in the
compression pool, the tracker's open series and one channel, the decoder's usual image). A chunk
left half full when the stream pauses is handed over after ``hold`` seconds
(:meth:`InOrderLane.idle`), so it is written with its gaps as the Python path would.

What differs, by design: frames in the chunk being filled are counted as received and written
when the chunk is (at most K - 1 frames later, or at the hand-over); the write latency of a full
chunk is shared by its frames; a chunk whose write fails counts all its frames dropped
(``write_error``; the Python path counts the frame whose arrival made the write and leaves the
others of the chunk missing); a chunk handed over at a pause starts its wait in RowChunker then
(so it reaches the file one hold later than it would have). Tests run streams through both
paths and compare files, bookkeeping and counters (``tests/test_lane.py``).

The odd rows of a serpentine scan come last column first: there the lane fills each chunk from
its last slot down and puts the blocks in slot order when the chunk is full (one more copy of
the chunk).
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any

from stemdaq.models import Codec, Frame
from stemdaq.receiver.fast1 import UsualV1
from stemdaq.receiver.fast2 import image_frame
from stemdaq.receiver.stream1 import V1_CHANNEL
from stemdaq.writer.codecs import BSLZ4_BLOCK_BYTES

if TYPE_CHECKING:
    from stemdaq.rank.datapath import DataPath
    from stemdaq.receiver.v2layout import Sections
    from stemdaq.writer.bookkeeping import Bookkeeping
    from stemdaq.writer.chunking import RowChunker

try:
    from stemdaq._lane import Lane
except ImportError:  # built without a C compiler: the Python path takes every frame
    Lane = None

#: the lane runs (stemdaq was built with its C extension)
BUILT = Lane is not None
_HEADER = struct.Struct(">QI")
_NS = 1e-9  # stream v1 times are nanoseconds (as receiver/fast1.py reads them)


class InOrderLane:
    """The in-order lane of one data path (module docstring); see :meth:`create`."""

    def __init__(
        self, dp: DataPath, lane: Any, seen: bytearray, rows: RowChunker, book: Bookkeeping
    ) -> None:
        self._dp = dp
        self._lane = lane
        self._seen = seen
        self._rows, self._book = rows, book
        self._hold = rows.hold
        #: the usual frame's bitshuffle-LZ4 header: the whole frame, the dataset's block size
        self._frame_header = _HEADER.pack(dp.frame_nbytes, BSLZ4_BLOCK_BYTES)
        self._sections: Sections | None = None  # what the lane reads: stream v2 ...
        self._v1: UsualV1 | None = None  # ... or v1
        #: frames the lane took (a figure for benchmarks and tests)
        self.frames = 0

    @classmethod
    def create(cls, dp: DataPath) -> InOrderLane | None:
        """A lane for ``dp``'s open file, or None where it cannot take frames (no C extension,
        one frame per chunk, frames stemdaq compresses, more than one channel)."""
        if Lane is None or not dp.opened or dp.frame_shape is None or dp.dtype is None:
            return None
        parts = dp.writer.lane_parts()
        if parts is None:
            return None
        rows, book = parts
        channel = dp.channels[0]
        seen = dp.tracker.lane_seen(dp.tracker.series_id or 0, channel, dp.frame_shape, dp.dtype)
        if seen is None:
            return None
        in_file, waiting, header, zero = rows.lane_parts(0)
        grid = dp.summary.lane_grid(channel) if dp.summary is not None else None
        n_m, n_k = dp.config.scan_shape
        lane = Lane(
            rows.k,
            n_k,
            n_m * n_k,
            dp.config.serpentine,
            seen,
            in_file,
            waiting,
            *book.buffers(),
            header,
            zero,
            grid,
        )
        return cls(dp, lane, seen, rows, book)

    # -- the data loop's calls ------------------------------------------------------------------

    def rearm(self) -> Any:
        """After a message the Python path read (and with the file writable, the compression
        pool empty: the data path's checks): ``Lane.push`` if the lane may take the next
        frames, else None (then it takes nothing)."""
        dp, lane = self._dp, self._lane
        usual = dp.decoder.usual_image()
        if usual is None:
            return None
        header = self._frame_header
        if isinstance(usual, UsualV1):  # stream v1: always detector bitshuffle-LZ4 here
            if (
                usual.payload[0] != header
                or dp.tracker.lane_seen(usual.series, V1_CHANNEL, usual.shape, usual.dtype)
                is not self._seen
                or not lane.arm_v1(usual.patterns, usual.payload, usual.n_parts)
            ):
                return None
            self._sections, self._v1 = None, usual
        else:
            layout, payload, sec = usual
            first = sec.first
            if (
                first.codec is not Codec.BSLZ4
                or payload[0] != header
                or dp.tracker.lane_seen(sec.series_id, first.name, first.shape, first.dtype)
                is not self._seen
                or not lane.arm(
                    layout, payload, sec.start_den or 0, sec.stop_den or 0, sec.real_time
                )
            ):
                return None
            self._sections, self._v1 = sec, None
        if dp.summary is not None:
            lane.min_class = dp.summary.min_class
        return lane.push

    def leave(self) -> None:
        """A message for the Python path: stop taking frames and hand it the chunk's frames."""
        self._lane.disarm()
        if self._lane.filled:
            self._handover()

    def idle(self, now: float) -> None:
        """No message waiting: hand over a chunk left half full for ``hold`` seconds."""
        lane = self._lane
        if lane.filled and now - lane.t0 >= self._hold:
            self._handover()

    def done(self, flags: int, message: Any) -> None:
        """After ``push`` took a frame: offer it to the summary (flag 2), write the full chunk
        (flag 1)."""
        lane, dp = self._lane, self._dp
        if flags & 2 and dp.summary is not None:
            position, image_id, start, stop, real, a, b = lane.last()
            view = memoryview(message[2] if self._v1 is not None else message).cast("B")
            dp.summary.offer(position, self._frame(image_id, start, stop, real, view[a:b]))
        if not flags & 1:
            return
        t0, now = time.perf_counter(), time.monotonic()
        try:
            self._rows.store_full(0, lane.pos0, lane, lane.nbytes, now)
        except Exception as exc:  # the file's fault (disk full, I/O error): stop writing
            lost = [self._frame(*item[1:]) for item in lane.handover()]
            self._count()
            dp.fail_write(lost, exc)
            return
        pos0, n, new = lane.commit()
        self._book.marked(0, pos0, n, new)
        frames, nbytes = self._count()
        dp.accounts.wrote_run(frames, nbytes, time.perf_counter() - t0)
        dp.writer.flush_if_due(now)
        if dp.summary is not None:
            lane.min_class = dp.summary.min_class

    # -- helpers --------------------------------------------------------------------------------

    def _count(self) -> tuple[int, int]:
        """Frames taken since the last count: to the tracker and the summary's skip count."""
        frames, nbytes, unwanted = self._lane.take_counts()
        self.frames += frames
        self._dp.tracker.add_received(frames, nbytes)
        if unwanted and self._dp.summary is not None:
            self._dp.summary.count_unwanted(unwanted)
        return frames, nbytes

    def _handover(self) -> None:
        """The chunk's frames to the Python path's writer, as if they came that way."""
        items = self._lane.handover()
        self._count()
        dp = self._dp
        for position, *rest in items:
            dp.store_handed_over(position, self._frame(*rest))

    def _frame(self, image_id: int, start: int, stop: int, real: int, payload: Any) -> Frame:
        """The Frame the Python path would have decoded (fast2's, or fast1's)."""
        if self._sections is not None:
            return image_frame(self._sections, image_id, start, stop, payload)
        v1 = self._v1
        if v1 is None:  # pragma: no cover - armed before anything was taken
            raise RuntimeError("the lane took a frame before it was armed")
        times = (start * _NS, stop * _NS, real * _NS) if v1.n_parts == 4 else (None,) * 3
        return Frame(
            v1.series, image_id, V1_CHANNEL, v1.shape, v1.dtype, Codec.BSLZ4, payload, *times
        )
