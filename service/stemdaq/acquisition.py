"""One acquisition: detector stream -> bounded queue -> NeXus file. Knows nothing about HTTP.

Threads (the data plane never runs on an event loop)::

    receiver thread   ZMQ PULL (zero-copy) -> StreamDecoder -> SeriesTracker -> batches
                      raw frames go to the compression pool first (futures keep the order)
         | bounded queue of batches (back-pressure: when full, the receiver stops reading and
         | the detector's ZMQ send buffer fills; nothing is dropped here)
    writer thread     one HDF5 writer: direct chunk write, bookkeeping, flushes, close
    compress pool     bitshuffle/LZ4/zstd/zlib release the GIL: raw frames use all cores
    summary thread    (SummaryAccumulator) sums frames it has time for, never blocks the writer

Errors in a background thread are stored and surface in :meth:`Acquisition.info` / ``state``.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.detector import SimplonClient
from stemdaq.errors import ConfigError, DecodeError
from stemdaq.models import (
    AcquisitionInfo,
    AcquisitionState,
    Codec,
    Counters,
    DropReason,
    Frame,
    SeriesEnd,
    SeriesStart,
)
from stemdaq.receiver import Placement, SeriesTracker, StreamDecoder, ZmqSource
from stemdaq.writer import NexusWriter, SummaryAccumulator

logger = logging.getLogger(__name__)

#: write-latency histogram bucket upper bounds, seconds
LATENCY_BUCKETS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1, 1.0)
_BATCH = 256  # frames handed to the writer at once ...
_BATCH_BYTES = 4 << 20  # ... or fewer, when they hold this many payload bytes
_POLL_MS = 50  # receiver poll period: bounds the latency of stop/abort/timeouts


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _Stop:
    """Queue sentinel: the writer closes the file with ``state``."""

    __slots__ = ("state", "reason")

    def __init__(self, state: AcquisitionState, reason: str | None) -> None:
        self.state = state
        self.reason = reason


class Acquisition:
    """Record one detector series into one NeXus file.

    Parameters
    ----------
    config
        Stream endpoint / detector URL, scan, compression, calibration, metadata.
    file_path
        Final path of the file (it is written as ``<file_path>.partial`` until closed).
    acq_id
        Identifier reported in :meth:`info`.
    queue_size
        Frames buffered between receiver and writer, at most.
    queue_bytes
        Payload bytes buffered between receiver and writer, at most (bounds memory for large
        or uncompressed frames).
    compress_workers
        Threads compressing frames that arrive uncompressed.
    on_change
        Called (from a background thread) on each state change and about once a second.
    """

    def __init__(
        self,
        config: AcquisitionConfig,
        file_path: Path,
        *,
        acq_id: str = "0",
        queue_size: int = 4096,
        queue_bytes: int = 256 << 20,
        compress_workers: int = 2,
        on_change: Callable[[AcquisitionInfo], None] | None = None,
    ) -> None:
        self.config = config
        self.file_path = Path(file_path)
        self.acq_id = acq_id
        self._on_change = on_change
        self._queue: queue.Queue[list[Any] | _Stop] = queue.Queue(
            maxsize=max(2, min(queue_size // _BATCH, queue_bytes // _BATCH_BYTES))
        )
        self._enqueued = 0  # frames put (receiver thread only)
        self._dequeued = 0  # frames taken (writer thread only)
        self._pool = ThreadPoolExecutor(compress_workers, thread_name_prefix=f"stemdaq-compress-{acq_id}")
        self._tracker = SeriesTracker(
            config.scan_shape, serpentine=config.serpentine, channel=config.channel, on_new_start="ignore"
        )
        self._decoder = StreamDecoder()
        self._writer = NexusWriter(self.file_path, config)
        self._summary: SummaryAccumulator | None = None
        self._detector: SimplonClient | None = None
        self._state = AcquisitionState.ARMED
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._abort_requested = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: str | None = None
        self._warnings: list[str] = []
        self._start: SeriesStart | None = None
        self._channels: tuple[str, ...] = ()
        self._frame_shape: tuple[int, int] | None = None
        self._dtype: str | None = None
        self._opened = False
        # counters owned by the writer thread (plain ints: reads from other threads are atomic)
        self._written = 0
        self._bytes_written = 0
        self._write_dropped: dict[str, int] = {}
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._frame_nbytes = 0
        self._created_at = _now_iso()
        self._started_at: str | None = None
        self._t_start: float | None = None
        self._finished_at: str | None = None
        self._rate = (0.0, 0.0)  # frames/s, MB/s (uncompressed)
        self._rate_mark = (time.monotonic(), 0)

    # -- control side -------------------------------------------------------------------------

    @property
    def state(self) -> AcquisitionState:
        """Current life-cycle state."""
        return self._state

    def start(self) -> None:
        """Connect to the stream and start the threads; in active mode also arm and trigger.

        Blocks only for the SIMPLON calls (active mode). Raises
        :class:`~stemdaq.errors.DetectorError` if the detector refuses.
        """
        try:
            endpoint = self.config.resolved_stream_endpoint()
            source = ZmqSource(endpoint)  # connect before arming: the start message must reach us
        except Exception as exc:
            self._error = f"cannot connect to the stream: {exc}"
            self._state = AcquisitionState.FAILED
            self._finished_at = _now_iso()
            self._done.set()
            raise ConfigError(self._error) from exc
        receiver = threading.Thread(
            target=self._guard, args=(self._receive_loop, source), name=f"stemdaq-rx-{self.acq_id}", daemon=True
        )
        writer = threading.Thread(
            target=self._guard, args=(self._write_loop,), name=f"stemdaq-wr-{self.acq_id}", daemon=True
        )
        self._threads = [receiver, writer]
        writer.start()
        receiver.start()
        if self.config.detector_url:
            try:
                self._arm_detector()
            except Exception:
                self.abort()
                raise
        self._notify()

    def _arm_detector(self) -> None:
        det = SimplonClient(self.config.detector_url or "", trigger_timeout=None)
        self._detector = det
        n = self.config.n_positions
        det.configure_scan(n)
        seq = det.arm()
        logger.info("detector armed for %d images (sequence id %s)", n, seq)
        trigger = threading.Thread(target=self._trigger, name=f"stemdaq-trigger-{self.acq_id}", daemon=True)
        trigger.start()

    def _trigger(self) -> None:
        det = self._detector
        if det is None:
            return
        try:
            det.trigger()
        except Exception as exc:  # the series may still complete; record and go on
            logger.warning("detector trigger failed: %s", exc)
            self._warnings.append(f"trigger failed: {exc}")

    def stop(self) -> None:
        """Finish: close on end-of-series, or after ``end_timeout`` s of silence."""
        self._stop_requested.set()

    def abort(self) -> None:
        """Close now; frames not received yet stay gaps in the file."""
        self._abort_requested.set()
        if self._detector is not None:
            try:
                self._detector.abort()
            except Exception as exc:
                logger.warning("detector abort failed: %s", exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the file is closed; True if it is."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Abort if running, wait for the threads and release resources."""
        if not self._threads:  # never started: nothing runs, nothing to close
            self._done.set()
        if not self._done.is_set():
            self.abort()
        self._done.wait()
        for t in self._threads:
            t.join(timeout=5)
        self._pool.shutdown(wait=True)
        if self._detector is not None:
            self._detector.close()

    def __enter__(self) -> Acquisition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def latency_histogram(self) -> tuple[list[float], list[int], float]:
        """Write-duration histogram: bucket bounds (s), cumulative counts, sum (s)."""
        cumulative, total = [], 0
        for c in self._latency_counts:
            total += c
            cumulative.append(total)
        return [*LATENCY_BUCKETS, float("inf")], cumulative, self._latency_sum

    def counters(self, final: bool | None = None) -> Counters:
        """Frame accounting, merged from receiver and writer; ``missing`` only once final."""
        c = self._tracker.counters()
        dropped = dict(c.get("dropped", {}))
        for reason, n in self._write_dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        n_channels = max(1, len(self._channels)) if self._channels else 1
        expected = self.config.n_positions * n_channels
        missing = 0
        if final or (final is None and self._state.is_final):
            missing = max(0, expected - self._written - sum(
                dropped.get(r.value, 0) for r in (DropReason.CORRUPT, DropReason.WRITE_ERROR)
            ))
        return Counters(
            frames_expected=expected,
            frames_received=c.get("frames_received", 0),
            frames_written=self._written,
            frames_dropped=sum(dropped.values()),
            dropped=dropped,
            messages_ignored=c.get("messages_ignored", 0),
            bytes_received=c.get("bytes_received", 0),
            bytes_written=self._bytes_written,
            frames_missing=missing,
            summary_frames=self._summary.included if self._summary is not None else 0,
        )

    def info(self) -> AcquisitionInfo:
        """A cheap, thread-safe snapshot for the API and the CLI."""
        counters = self.counters()
        elapsed = time.monotonic() - self._t_start if self._t_start is not None else 0.0
        fps, mbs = self._rate if not self._state.is_final else (0.0, 0.0)
        eta = None
        if self._state == AcquisitionState.ACQUIRING and fps > 0:
            eta = max(0.0, (counters.frames_expected - counters.frames_written) / fps)
        shape = [*self.config.scan_shape, *self._frame_shape] if self._frame_shape else None
        return AcquisitionInfo(
            id=self.acq_id,
            state=self._state,
            file_path=str(self.file_path.resolve()),
            file_uri=self.file_path.resolve().as_uri(),
            dataset_path=self._writer.dataset_path,
            shape=shape,
            dtype=self._dtype,
            chunk_shape=[1, 1, *self._frame_shape] if self._frame_shape else None,
            channels=list(self._channels),
            series_id=self._start.series_id if self._start else None,
            frames_expected=counters.frames_expected,
            frames_written=counters.frames_written,
            frames_dropped=counters.frames_dropped,
            counters=counters,
            frames_per_second=fps,
            mb_per_second=mbs,
            queue_depth=max(0, self._enqueued - self._dequeued),
            created_at=self._created_at,
            started_at=self._started_at,
            finished_at=self._finished_at,
            elapsed_seconds=elapsed,
            eta_seconds=eta,
            error=self._error,
            warnings=list(self._warnings),
            config=self.config.model_dump(mode="json"),
        )

    # -- background threads -------------------------------------------------------------------

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        """Run a thread body; an exception fails the acquisition instead of vanishing."""
        try:
            target(*args)
        except Exception as exc:
            logger.exception("%s failed", threading.current_thread().name)
            message = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._error = self._error or message
            self._abort_requested.set()
            if target == self._write_loop:
                self._finish(AcquisitionState.FAILED, message)
            else:
                self._put(_Stop(AcquisitionState.FAILED, message))

    def _set_state(self, state: AcquisitionState) -> None:
        with self._lock:
            if self._state.is_final or self._state == state:
                return
            self._state = state
        logger.info("acquisition %s: %s", self.acq_id, state.value)
        self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self.info())
            except Exception:
                logger.exception("on_change callback failed")

    def _receive_loop(self, source: ZmqSource) -> None:
        """Receiver thread: socket -> decoder -> tracker -> batches for the writer."""
        cfg = self.config
        t_armed = time.monotonic()
        last_msg = t_armed
        series_open = False
        stop_sent = False
        batch: list[Any] = []
        batch_bytes = 0
        tracker, decode = self._tracker, self._decoder.decode
        place = tracker.place
        with source:
            while not stop_sent:
                parts = source.recv(_POLL_MS)
                now = time.monotonic()
                if parts is None:
                    if batch:
                        self._put(batch)
                        batch, batch_bytes = [], 0
                    if self._abort_requested.is_set():
                        self._put(_Stop(AcquisitionState.ABORTED, "aborted"))
                        stop_sent = True
                    elif not series_open and now - t_armed > cfg.start_timeout:
                        self._put(_Stop(AcquisitionState.FAILED, f"no series start within {cfg.start_timeout:g} s"))
                        stop_sent = True
                    elif not series_open and self._stop_requested.is_set():
                        self._put(_Stop(AcquisitionState.ABORTED, "stopped before the series started"))
                        stop_sent = True
                    elif series_open and now - last_msg > cfg.end_timeout:
                        self._warnings.append(f"no end-of-series message: closed after {cfg.end_timeout:g} s of silence")
                        self._put(_Stop(AcquisitionState.COMPLETED, "end timeout"))
                        stop_sent = True
                    continue
                last_msg = now
                for event in decode(parts):
                    kind = type(event)
                    if kind is Frame:
                        placement = place(event)
                        if placement is None:
                            continue
                        if not self._opened:
                            self._open_file(event)
                        batch.append(self._prepare(placement, event))
                        batch_bytes += len(event.payload)
                        if len(batch) >= _BATCH or batch_bytes >= _BATCH_BYTES:
                            self._put(batch)
                            batch, batch_bytes = [], 0
                    elif kind is SeriesStart:
                        if tracker.open(event) is not None:  # one series per file
                            self._on_series_start(event)
                            series_open = True
                    elif kind is SeriesEnd:
                        if tracker.end(event) and series_open:
                            if batch:
                                self._put(batch)
                                batch, batch_bytes = [], 0
                            self._put(_Stop(AcquisitionState.COMPLETED, None))
                            stop_sent = True
                            break
                    else:
                        tracker.reject(event)
                if self._abort_requested.is_set() and not stop_sent:
                    if batch:
                        self._put(batch)
                        batch, batch_bytes = [], 0
                    self._put(_Stop(AcquisitionState.ABORTED, "aborted"))
                    stop_sent = True
        if batch:  # pragma: no cover - flushed before every stop above
            self._put(batch)

    def _put(self, item: list[Any] | _Stop) -> None:
        """Blocking put (back-pressure), but give up waiting when the writer has died."""
        if type(item) is list:
            self._enqueued += len(item)
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._done.is_set():
                    return

    def _on_series_start(self, start: SeriesStart) -> None:
        self._start = start
        self._started_at = _now_iso()
        self._t_start = time.monotonic()
        self._channels = self._tracker.channels or start.channels or ("",)
        if start.n_images is not None and start.n_images != self.config.n_positions:
            msg = f"detector announces {start.n_images} images, scan has {self.config.n_positions} positions"
            logger.warning(msg)
            self._warnings.append(msg)
        self._set_state(AcquisitionState.ACQUIRING)

    def _open_file(self, first: Frame) -> None:
        """At the first frame the codec is known: create the file and its datasets."""
        start = self._start or SeriesStart(series_id=first.series_id, protocol="stream2")
        self._frame_shape = tuple(first.shape)  # type: ignore[assignment]
        self._dtype = first.dtype
        self._channels = self._tracker.channels or self._channels or (first.channel,)
        self._frame_nbytes = int(np.prod(first.shape)) * np.dtype(first.dtype).itemsize
        self._writer.open(
            start,
            endpoint=self.config.resolved_stream_endpoint(),
            channels=self._channels,
            frame_shape=first.shape,
            dtype=first.dtype,
            codec=first.codec,
        )
        if self.config.summary:
            self._summary = SummaryAccumulator(self.config.scan_shape, first.shape, first.dtype)
        self._opened = True

    def _prepare(self, placement: Placement, frame: Frame) -> tuple[int, int, Any, Frame]:
        position, channel_index = placement
        if frame.codec is self._writer.filter_codec and frame.codec is not Codec.RAW:
            return position, channel_index, frame.payload, frame
        future: Future[Any] = self._pool.submit(self._writer.prepare, frame)
        return position, channel_index, future, frame

    def _write_loop(self) -> None:
        """Writer thread: the only thread that writes HDF5 after the file is open."""
        writer, summary_offer = self._writer, None
        lat_counts, buckets = self._latency_counts, LATENCY_BUCKETS
        perf = time.perf_counter
        next_tick = time.monotonic() + 1.0
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._opened:
                    writer.maybe_flush()
                next_tick = self._tick(next_tick)
                continue
            if isinstance(item, _Stop):
                self._finish(item.state, item.reason)
                return
            self._dequeued += len(item)
            if summary_offer is None and self._summary is not None:
                summary_offer = self._summary.offer
            if self._abort_requested.is_set() and self._state == AcquisitionState.FAILED:
                continue
            for position, channel_index, chunk, frame in item:
                try:
                    if isinstance(chunk, Future):
                        chunk = chunk.result()
                    t0 = perf()
                    self._bytes_written += writer.write(position, channel_index, chunk, frame)
                    dt = perf() - t0
                except DecodeError as exc:
                    self._drop(DropReason.CORRUPT, frame, str(exc))
                    continue
                except Exception as exc:
                    self._drop(DropReason.WRITE_ERROR, frame, str(exc))
                    continue
                self._written += 1
                self._latency_sum += dt
                lat_counts[bisect.bisect_left(buckets, dt)] += 1
                if summary_offer is not None:
                    summary_offer(position, frame)
            next_tick = self._tick(next_tick)

    def _drop(self, reason: DropReason, frame: Frame, detail: str) -> None:
        self._write_dropped[reason.value] = self._write_dropped.get(reason.value, 0) + 1
        logger.warning("frame %d (%s) dropped: %s: %s", frame.frame_id, frame.channel, reason.value, detail)

    def _tick(self, next_tick: float) -> float:
        now = time.monotonic()
        if now < next_tick:
            return next_tick
        t0, n0 = self._rate_mark
        dn = self._written - n0
        fps = dn / (now - t0) if now > t0 else 0.0
        self._rate = (fps, fps * self._frame_nbytes / 1e6)
        self._rate_mark = (now, self._written)
        self._notify()
        return now + 1.0

    def _finish(self, state: AcquisitionState, reason: str | None) -> None:
        """Close the file (writer thread, or the failing thread when the writer is gone)."""
        with self._lock:
            if self._done.is_set() or getattr(self, "_finishing", False):
                return
            self._finishing = True
        if state == AcquisitionState.FAILED and self._error is None:
            self._error = reason
        self._set_state(AcquisitionState.FINISHING)
        # drain what is still queued (frames already received are never thrown away)
        self._drain()
        try:
            if self.config.detector_url and self._detector is not None and state != AcquisitionState.ABORTED:
                try:
                    self._detector.disarm()
                except Exception as exc:
                    logger.warning("detector disarm failed: %s", exc)
            self._writer.close(state, self.counters(final=True), self._summary if self._opened else None)
        except Exception as exc:
            logger.exception("closing %s failed", self.file_path)
            self._error = self._error or f"close failed: {exc}"
            state = AcquisitionState.FAILED
        finally:
            with self._lock:
                self._state = state
            self._finished_at = _now_iso()
            self._done.set()
            logger.info("acquisition %s %s: %s", self.acq_id, self._state.value, self.counters().model_dump())
            self._notify()

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Stop):
                continue
            self._dequeued += len(item)
            for position, channel_index, chunk, frame in item:
                try:
                    if isinstance(chunk, Future):
                        chunk = chunk.result()
                    self._bytes_written += self._writer.write(position, channel_index, chunk, frame)
                    self._written += 1
                except Exception as exc:
                    self._drop(DropReason.WRITE_ERROR, frame, str(exc))
