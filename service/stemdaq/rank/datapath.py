"""The data path of one acquisition: stream messages in, frames into the file, every frame counted.

One data thread runs :meth:`DataPath.run`::

    ZMQ PULL (zero-copy) -> StreamDecoder -> SeriesTracker -> NexusWriter.write
    (direct chunk write of detector-compressed frames: one HDF5 call per frame or per K-frame
    chunk; raw frames go through the compression pool and are written in arrival order)

    or, for usual frames in scan order: ZMQ PULL -> the in-order lane (one C call per frame,
    one HDF5 call per K-frame chunk; :mod:`stemdaq.rank.lane`)

It knows nothing about the detector or HTTP: the control side (:class:`stemdaq.acquisition.
Acquisition`) tells it to stop or abort through :class:`Signals` and learns how the series
ended from the return value. Every frame that does not reach the file is counted under a
:class:`~stemdaq.models.DropReason`; a write error that is not the frame's own fault (disk full,
I/O error) ends the acquisition at once, so the file only ever claims frames it holds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from stemdaq.compression import CompressionWindow
from stemdaq.config import AcquisitionConfig
from stemdaq.errors import DecodeError
from stemdaq.models import (
    AcquisitionState,
    Codec,
    Counters,
    DropReason,
    Frame,
    SeriesEnd,
    SeriesStart,
)
from stemdaq.rank.accounting import Accounts, drop_line, drop_reason, merge_counters
from stemdaq.rank.fileopen import open_file
from stemdaq.rank.lane import BUILT as LANE_BUILT
from stemdaq.rank.lane import InOrderLane
from stemdaq.receiver import Placement, SeriesTracker, StreamDecoder, ZmqSource
from stemdaq.receiver.zmq_source import with_rest
from stemdaq.writer import NexusWriter, SummaryAccumulator
from stemdaq.writer.filesafety import describe_write_error

logger = logging.getLogger(__name__)

_POLL_MS = 50  # idle poll period: bounds the latency of stop/abort/timeouts
_COMPRESS_BATCH = 16  # raw frames per compression task
NO_END = "no end-of-series message"


@dataclass
class Signals:
    """What the control side tells the data thread (thread-safe events and plain values)."""

    stop: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    #: active mode: only a start with this series id opens the series (None: any start)
    expected_series: int | None = None
    #: active mode: starts are held back until the detector's sequence id is known
    hold_starts: bool = False
    #: set by the data thread when the series opened
    started: threading.Event = field(default_factory=threading.Event)


class DataPath:
    """Receive, place, write and count the frames of one series (see the module docstring).

    Parameters
    ----------
    config
        The acquisition's config (scan, compression, timeouts).
    writer
        The file (already reserved); opened at the first frame.
    signals
        Stop/abort requests from the control side.
    queue_bytes, compress_workers
        The compression pool for frames that arrive uncompressed.
    """

    def __init__(
        self,
        config: AcquisitionConfig,
        writer: NexusWriter,
        signals: Signals,
        *,
        name: str,
        queue_bytes: int = 64 << 20,
        compress_workers: int = 2,
        on_tick: Any = None,
        on_series_start: Any = None,
        expected_positions: int | None = None,
        lane: bool = True,
    ) -> None:
        self.config = config
        #: scan positions this data path owns (a rank of N: its blocks only; default all)
        self.expected_positions = (
            config.n_positions if expected_positions is None else expected_positions
        )
        self.writer = writer
        self.signals = signals
        self.name = name
        self._on_tick = on_tick
        self._on_series_start = on_series_start
        self.compression = CompressionWindow(
            writer.prepare, compress_workers, queue_bytes, _COMPRESS_BATCH, name=f"{name}-compress"
        )
        self.tracker = SeriesTracker(
            config.scan_shape,
            serpentine=config.serpentine,
            channel=config.channel,
            on_new_start="ignore",
        )
        self.decoder = StreamDecoder()
        self.summary: SummaryAccumulator | None = None
        self.start: SeriesStart | None = None
        self.channels: tuple[str, ...] = ()
        self.frame_shape: tuple[int, int] | None = None
        self.dtype: str | None = None
        self.opened = False
        self.warnings: list[str] = []
        self._held: list[SeriesStart] = []
        self._fatal: str | None = None  # a write error that ends the acquisition
        #: what happened to each placed frame (written, dropped, latency, rate)
        self.accounts = Accounts(name)
        self.frame_nbytes = 0
        self.t_start: float | None = None
        #: the in-order lane (made once the file is open, where it applies; ``lane=False``:
        #: never, every frame takes the Python path)
        self.lane: InOrderLane | None = None
        self._lane_wanted = lane and LANE_BUILT

    # -- accounting -----------------------------------------------------------------------------

    def counters(self, final: bool) -> Counters:
        """Frame accounting, merged from receiver and writer; ``missing`` only once final."""
        n_channels = max(1, len(self.channels)) if self.channels else 1
        return merge_counters(
            self.tracker.counters(),
            self.accounts,
            expected=self.expected_positions * n_channels,
            frames_written=self.writer.frames_written if self.opened else 0,
            summary=self.summary,
            final=final,
        )

    def drop_summary(self) -> str | None:
        """One line with every drop reason and its count, None if nothing was dropped."""
        return drop_line(self.counters(final=True))

    # -- the loop -------------------------------------------------------------------------------

    def run(self, source: ZmqSource) -> tuple[AcquisitionState, str | None]:
        """Receive and write until the series is over; return how it ended (file not closed)."""
        try:
            state, reason = self._run(source)
        finally:  # the frames of a chunk the lane was filling go to the writer as the rest
            if self.lane is not None:
                self.lane.leave()
        failed = self._fatal or self.writer.low_space  # e.g. set by that hand-over's writes
        if failed is not None and state is not AcquisitionState.FAILED:
            return AcquisitionState.FAILED, failed
        return state, reason

    def _run(self, source: ZmqSource) -> tuple[AcquisitionState, str | None]:
        cfg = self.config
        t_armed = last_msg = time.monotonic()
        series_open = False
        tracker, decode, decode_part = self.tracker, self.decoder.decode, self.decoder.decode_part
        place, write = tracker.place, self._write
        sig = self.signals
        aborted, stopping = sig.abort.is_set, sig.stop.is_set
        sock = source.socket
        recv = sock.recv
        flags = zmq.NOBLOCK
        next_tick = t_armed + 1.0
        writer, busy = self.writer, 0
        push: Any = None  # the lane's push while it is armed
        lane_done: Any = None
        while True:
            try:  # drain what is there without a poll per message; poll only when idle
                part = recv(flags, copy=False)  # zero-copy: one part (stream v2) ...
                # ... or a multipart stream v1 message, whose parts arrive together
                parts = with_rest(recv, part, flags) if part.more else part
            except zmq.Again:
                parts = None
            now = time.monotonic()
            if parts is None:
                if self.lane is not None:
                    self.lane.idle(now)
                self._write_pending(block=True)
                if self.opened:
                    self.writer.maybe_flush()
                if self._fatal is not None or self.writer.low_space is not None:
                    return AcquisitionState.FAILED, self._fatal or self.writer.low_space
                if now >= next_tick:
                    next_tick = self._tick(now)
                if aborted():
                    return self._abort_state(sock)
                if self._held and not sig.hold_starts and not series_open:
                    series_open = self._release_held()
                if not series_open:
                    if stopping():
                        return AcquisitionState.ABORTED, "stopped before the series started"
                    if now - t_armed > cfg.start_timeout:
                        return (
                            AcquisitionState.FAILED,
                            f"no series start on {source.endpoint} within "
                            f"{cfg.start_timeout:g} s (start_timeout)",
                        )
                elif now - last_msg > cfg.end_timeout:
                    self.warnings.append(
                        f"{NO_END}: closed after {cfg.end_timeout:g} s of stream silence"
                    )
                    return AcquisitionState.COMPLETED, "end timeout"
                source.recv_ready(_POLL_MS)
                continue
            last_msg = now
            taken = -1
            if push is not None:  # the in-order lane: -1, or taken (flags: what is to do)
                taken = push(parts)
                if taken > 0:
                    lane_done(taken, parts)
            if taken < 0:
                if self.lane is not None:
                    self.lane.leave()  # the Python path sees every frame in arrival order
                    if self._fatal is not None or writer.low_space is not None:
                        return AcquisitionState.FAILED, self._fatal or writer.low_space
                for event in decode(parts) if type(parts) is list else decode_part(parts):
                    if isinstance(event, Frame):
                        placement = place(event)
                        if placement is not None:
                            write(placement, event)
                    elif isinstance(event, SeriesStart):
                        if series_open:
                            tracker.open(event)  # counted as ignored: one series per file
                        elif sig.hold_starts:
                            self._held.append(event)
                        else:
                            series_open = self._open_series(event)
                    elif isinstance(event, SeriesEnd):
                        if tracker.end(event) and series_open:
                            if aborted():  # the detector ends the series we asked it to abort
                                return self._abort_state(sock)
                            return AcquisitionState.COMPLETED, None
                    else:
                        tracker.reject(event)
                push = self._arm_lane()
                lane_done = self.lane.done if push is not None else None  # type: ignore[union-attr]
            if self._fatal is not None or writer.low_space is not None:
                return AcquisitionState.FAILED, self._fatal or writer.low_space
            busy += 1
            if busy & 63 == 0 and aborted():  # abort latency: 64 messages at most (~1 ms)
                return self._abort_state(sock)
            if now >= next_tick:
                next_tick = self._tick(now)

    def _arm_lane(self) -> Any:
        """After a message the Python path read: the lane's push if it may take the next."""
        if self._fatal is not None or self.writer.low_space is not None:
            return None
        if self.lane is None:
            if not self._lane_wanted or not self.opened:
                return None
            self._lane_wanted = False  # one try, once the file is open
            self.lane = InOrderLane.create(self)
        return self.lane.rearm() if self.lane is not None and self.compression.empty else None

    def _open_series(self, start: SeriesStart) -> bool:
        """Open ``start``'s series if it is the one expected; True if it opened."""
        expected = self.signals.expected_series
        if expected is not None and start.series_id != expected:
            self.tracker.ignore(start)
            logger.warning(
                "%s: series %d on the stream is not the detector's (sequence id %d): ignored",
                self.name,
                start.series_id,
                expected,
            )
            return False
        if self.tracker.open(start) is None:
            return False
        self.start = start
        self.t_start = time.monotonic()
        self.channels = self.tracker.channels or start.channels or ("",)
        if start.n_images is not None and start.n_images != self.config.n_positions:
            msg = (
                f"detector announces {start.n_images} images, "
                f"scan has {self.config.n_positions} positions"
            )
            logger.warning("%s: %s", self.name, msg)
            self.warnings.append(msg)
        self.signals.started.set()
        if self._on_series_start is not None:
            self._on_series_start(start)
        return True

    def _release_held(self) -> bool:
        """Starts held back while arming: open the detector's, ignore the others."""
        held, self._held = self._held, []
        opened = False
        for start in held:
            if opened:
                self.tracker.open(start)  # ignored: one series per file
            else:
                opened = self._open_series(start)
        return opened

    def _abort_state(self, sock: zmq.Socket) -> tuple[AcquisitionState, str | None]:
        self.accounts.count_unread(sock, self.decoder.decode, self.tracker.series_id)
        return AcquisitionState.ABORTED, "aborted"

    # -- writing --------------------------------------------------------------------------------

    def _write(self, placement: Placement, frame: Frame) -> None:
        """Write a placed frame now, or hand it to the compression pool (written in order later)."""
        if self._fatal is not None:  # the file takes nothing more: count, do not write
            self.accounts.drop(DropReason.WRITE_ERROR, frame, self._fatal)
            return
        if not self.opened:
            try:
                open_file(self, frame)
            except Exception as exc:  # e.g. disk full, or metadata the writer refuses
                logger.exception("%s: cannot create %s", self.name, self.writer.tmp_path)
                self._fatal = f"cannot create the file: {type(exc).__name__}: {exc}"
                self.frame_shape = None
                self.accounts.drop(DropReason.WRITE_ERROR, frame, self._fatal)
                return
        position, channel_index = placement
        if frame.codec is self.writer.filter_codec and frame.codec is not Codec.RAW:
            if not self.compression.empty:  # keep file order = arrival order
                self._write_pending(block=True)
            self._store(position, channel_index, frame.payload, frame)
            return
        self.compression.add(position, channel_index, frame)
        self._write_pending(block=self.compression.full)

    def _write_pending(self, block: bool) -> None:
        """Write the compressed frames that are ready, oldest first; ``block``: wait for all."""
        for position, channel_index, frame, chunk in self.compression.ready(block):
            if isinstance(chunk, DecodeError):
                self.accounts.drop(drop_reason(chunk), frame, str(chunk))
            elif isinstance(chunk, Exception):
                self.accounts.drop(DropReason.CORRUPT, frame, f"{type(chunk).__name__}: {chunk}")
            elif self._fatal is not None:
                self.accounts.drop(DropReason.WRITE_ERROR, frame, self._fatal)
            else:
                self._store(position, channel_index, chunk, frame)

    def write_pending(self) -> None:
        """Write what the compression pool and the chunks waiting for frames still hold (at
        the end of the series), so the final counters count them."""
        self._write_pending(block=True)
        if self.opened and self._fatal is None:
            self.writer.write_waiting_chunks()

    def _store(
        self, position: int, channel_index: int, chunk: Any, frame: Frame, offer: bool = True
    ) -> None:
        t0 = time.perf_counter()
        try:
            n = self.writer.write(position, channel_index, chunk, frame)
        except DecodeError as exc:  # this frame's own fault: drop it, go on
            self.accounts.drop(drop_reason(exc), frame, str(exc))
            return
        except Exception as exc:  # the file's fault (disk full, I/O error): stop writing
            self.fail_write([frame], exc)
            return
        self.accounts.wrote(n, time.perf_counter() - t0)
        if offer and self.summary is not None:
            self.summary.offer(position, frame)

    def store_handed_over(self, position: int, frame: Frame) -> None:
        """A frame the lane placed (and offered to the summary): to the writer."""
        if self._fatal is not None:
            self.accounts.drop(DropReason.WRITE_ERROR, frame, self._fatal)
        else:
            self._store(position, 0, frame.payload, frame, offer=False)

    def fail_write(self, frames: list[Frame], exc: Exception) -> None:
        """A write of ``frames`` failed for the file's fault (disk full, I/O error): no further
        frame is written, the acquisition stops."""
        self._fatal = f"write error at frame {frames[0].frame_id}: {describe_write_error(exc)}"
        self.writer.storage_error = self._fatal
        logger.error("%s: %s; stopping the acquisition", self.name, self._fatal)
        for frame in frames:
            self.accounts.drop(DropReason.WRITE_ERROR, frame, self._fatal)

    def _tick(self, now: float) -> float:
        """Once a second: update the rates and tell the control side."""
        self.accounts.update_rate(now, self.frame_nbytes)
        if self.opened:
            self.writer.check_space()
        if self._on_tick is not None:
            self._on_tick()
        return now + 1.0
