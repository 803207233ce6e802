"""One acquisition: detector stream -> NeXus file. Knows nothing about HTTP.

Threads (the data plane never runs on an event loop)::

    data thread     ZMQ PULL (zero-copy) -> StreamDecoder -> SeriesTracker -> NexusWriter.write
                    (direct chunk write of detector-compressed frames: one HDF5 call per frame)
    compress pool   frames that arrive uncompressed are compressed here (bitshuffle, LZ4, zstd
                    and zlib release the GIL, so raw frames use every core); a bounded window of
                    pending frames is written in order as they complete
    summary thread  (SummaryAccumulator) sums the frames it has time for, never blocks writing

Back-pressure, not loss: while the data thread writes it does not read, so messages wait in
ZeroMQ's receive queue (``rcvhwm``) and then in the detector's send queue. Errors in a
background thread are stored and surface in :meth:`Acquisition.info` / ``state``.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import zmq

from stemdaq.compression import CompressionWindow
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
_REASONS = {r.value for r in DropReason}
LATENCY_BUCKETS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1, 1.0)
_POLL_MS = 50  # idle poll period: bounds the latency of stop/abort/timeouts
_COMPRESS_BATCH = 16  # raw frames per compression task


def _reason(exc: DecodeError) -> DropReason:
    """The drop reason a codec error names (``corrupt`` when it names none we know)."""
    return DropReason(exc.reason) if exc.reason in _REASONS else DropReason.CORRUPT


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
        Messages ZeroMQ may buffer on our side while the data thread writes (``RCVHWM``).
    queue_bytes
        Payload bytes of uncompressed frames waiting for the compression pool, at most.
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
        queue_size: int = 1000,
        queue_bytes: int = 64 << 20,
        compress_workers: int = 2,
        on_change: Callable[[AcquisitionInfo], None] | None = None,
    ) -> None:
        self.config = config
        self.file_path = Path(file_path)
        self.acq_id = acq_id
        self._on_change = on_change
        self._rcvhwm = queue_size
        # the receiver already walked every compressed frame's block table: not twice
        self._writer = NexusWriter(self.file_path, config, validate_framing=False)
        self._compression = CompressionWindow(
            self._writer.prepare,
            compress_workers,
            queue_bytes,
            _COMPRESS_BATCH,
            name=f"stemdaq-compress-{acq_id}",
        )
        self._tracker = SeriesTracker(
            config.scan_shape,
            serpentine=config.serpentine,
            channel=config.channel,
            on_new_start="ignore",
        )
        self._decoder = StreamDecoder()
        self._summary: SummaryAccumulator | None = None
        self._detector: SimplonClient | None = None
        self._detector_armed = False
        self._notify_lock = threading.Lock()
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
        self._open_error: str | None = None
        # counters owned by the data thread (plain ints: reads from other threads are atomic)
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
            # connect before arming: the start message must reach us
            source = ZmqSource(endpoint, rcvhwm=self._rcvhwm)
        except Exception as exc:
            self._error = f"cannot connect to the stream: {exc}"
            self._state = AcquisitionState.FAILED
            self._finished_at = _now_iso()
            self._done.set()
            raise ConfigError(self._error) from exc
        data = threading.Thread(
            target=self._run, args=(source,), name=f"stemdaq-data-{self.acq_id}", daemon=True
        )
        self._threads = [data]
        data.start()
        if self.config.detector_url:
            try:
                self._arm_detector()
            except Exception as exc:
                self._fail(f"detector: {exc}")
                raise
        self._notify()

    def _arm_detector(self) -> None:
        """Configure, arm and trigger; gives up between steps when an abort/stop came in."""
        det = SimplonClient(self.config.detector_url or "")
        self._detector = det
        n = self.config.n_positions
        det.configure_scan(n)
        if self._cancelled():
            return
        seq = det.arm()
        self._detector_armed = True
        logger.info("detector armed for %d images (sequence id %s)", n, seq)
        if self._cancelled():
            return
        trigger = threading.Thread(
            target=self._trigger, name=f"stemdaq-trigger-{self.acq_id}", daemon=True
        )
        self._threads.append(trigger)
        trigger.start()

    def _cancelled(self) -> bool:
        return self._abort_requested.is_set() or self._stop_requested.is_set()

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
        """Finish: close on end-of-series, or after ``end_timeout`` s of silence. Non-blocking."""
        self._stop_requested.set()

    def abort(self) -> None:
        """Close now; frames not received yet stay gaps in the file. Non-blocking.

        The data thread stops reading, tells the detector to abort (active mode) and closes.
        """
        self._abort_requested.set()

    def _fail(self, message: str) -> None:
        """Give up: the data thread closes the file as FAILED with ``message``."""
        with self._lock:
            self._error = self._error or message
        self._abort_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the file is closed; True if it is."""
        return self._done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Abort if running, wait (up to ``timeout`` s) for the threads, release resources.

        Returns False if the data thread did not finish in time (resources are then left to it).
        """
        if not self._threads:  # never started: nothing runs, nothing to close
            self._done.set()
        if not self._done.is_set():
            self.abort()
        if not self._done.wait(timeout):
            logger.error("acquisition %s did not finish within %s s", self.acq_id, timeout)
            return False
        for t in self._threads:
            t.join(timeout=5)
        self._compression.shutdown()
        if self._detector is not None:
            self._detector.close()
        return True

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
        dropped: dict[str, int] = dict(cast("dict[str, int]", c.get("dropped", {})))
        for reason, n in self._write_dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        n_channels = max(1, len(self._channels)) if self._channels else 1
        expected = self.config.n_positions * n_channels
        missing = 0  # scan positions x channels without a frame in the file (gaps)
        if final or (final is None and self._state.is_final):
            missing = max(0, expected - self._written)
        return Counters(
            frames_expected=expected,
            frames_received=cast(int, c.get("frames_received", 0)),
            frames_written=self._written,
            frames_dropped=sum(dropped.values()),
            dropped=dropped,
            messages_ignored=cast(int, c.get("messages_ignored", 0)),
            bytes_received=cast(int, c.get("bytes_received", 0)),
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
            queue_depth=len(self._compression),
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

    def _run(self, source: ZmqSource) -> None:
        """The data thread: receive and write until the series is over, then close the file."""
        state: AcquisitionState = AcquisitionState.FAILED
        reason: str | None = "data thread ended unexpectedly"
        try:
            with source:
                state, reason = self._receive(source)
        except Exception as exc:  # stored and surfaced; the file is still closed below
            logger.exception("acquisition %s: data thread failed", self.acq_id)
            state, reason = AcquisitionState.FAILED, f"{type(exc).__name__}: {exc}"
        self._finish(state, reason)

    def _set_state(self, state: AcquisitionState) -> None:
        with self._lock:
            if self._state.is_final or self._state == state:
                return
            self._state = state
        logger.info("acquisition %s: %s", self.acq_id, state.value)
        self._notify()

    def _notify(self) -> None:
        """Tell the listener; serialised, so snapshots arrive in the order they were taken."""
        if self._on_change is None:
            return
        with self._notify_lock:
            try:
                self._on_change(self.info())
            except Exception:
                logger.exception("on_change callback failed")

    def _receive(self, source: ZmqSource) -> tuple[AcquisitionState, str | None]:
        """Receive, place and write frames; return how the series ended."""
        cfg = self.config
        t_armed = last_msg = time.monotonic()
        series_open = False
        tracker, decode = self._tracker, self._decoder.decode
        place, write = tracker.place, self._write
        aborted = self._abort_requested.is_set
        sock = source.socket
        flags = zmq.NOBLOCK
        next_tick = t_armed + 1.0
        while True:
            try:  # drain what is there without a poll per message; poll only when idle
                parts = sock.recv_multipart(flags, copy=False)
            except zmq.Again:
                parts = None
            now = time.monotonic()
            if parts is None:
                self._write_pending(block=True)
                if self._opened:
                    self._writer.maybe_flush()
                if now >= next_tick:
                    next_tick = self._tick(now)
                if aborted():
                    return self._abort_state(sock)
                if not series_open:
                    if self._stop_requested.is_set():
                        return AcquisitionState.ABORTED, "stopped before the series started"
                    if now - t_armed > cfg.start_timeout:
                        return (
                            AcquisitionState.FAILED,
                            f"no series start within {cfg.start_timeout:g} s",
                        )
                elif now - last_msg > cfg.end_timeout:
                    self._warnings.append(
                        f"no end-of-series message: closed after {cfg.end_timeout:g} s of silence"
                    )
                    return AcquisitionState.COMPLETED, "end timeout"
                source.recv_ready(_POLL_MS)
                continue
            last_msg = now
            for event in decode(parts):
                if isinstance(event, Frame):
                    placement = place(event)
                    if placement is not None:
                        write(placement, event)
                        if self._open_error is not None:
                            return AcquisitionState.FAILED, self._open_error
                elif isinstance(event, SeriesStart):
                    if tracker.open(event) is not None:  # one series per file
                        self._on_series_start(event)
                        series_open = True
                elif isinstance(event, SeriesEnd):
                    if tracker.end(event) and series_open:
                        if aborted():  # the detector ends the series we asked it to abort
                            return self._abort_state(sock)
                        return AcquisitionState.COMPLETED, None
                else:
                    tracker.reject(event)
            if aborted():
                return self._abort_state(sock)
            if now >= next_tick:
                next_tick = self._tick(now)

    def _abort_state(self, sock: zmq.Socket) -> tuple[AcquisitionState, str | None]:
        self._count_unread(sock)
        if self._error is not None:  # _fail() asked for this stop
            return AcquisitionState.FAILED, self._error
        return AcquisitionState.ABORTED, "aborted"

    def _count_unread(self, sock: zmq.Socket, budget: float = 0.5) -> None:
        """Frames of this series already queued when the abort came are not written: count
        them as dropped (``aborted``) rather than lose them silently (reads for ``budget`` s)."""
        deadline, series, n = time.monotonic() + budget, self._tracker.series_id, 0
        while time.monotonic() < deadline:
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += sum(
                1 for e in self._decoder.decode(parts) if type(e) is Frame and e.series_id == series
            )
        if n:
            self._write_dropped[DropReason.ABORTED.value] = n
            logger.warning(
                "acquisition %s: %d received frames not written (aborted)", self.acq_id, n
            )

    def _on_series_start(self, start: SeriesStart) -> None:
        self._start = start
        self._started_at = _now_iso()
        self._t_start = time.monotonic()
        self._channels = self._tracker.channels or start.channels or ("",)
        if start.n_images is not None and start.n_images != self.config.n_positions:
            msg = (
                f"detector announces {start.n_images} images, "
                f"scan has {self.config.n_positions} positions"
            )
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
            self._summary = SummaryAccumulator(
                self.config.scan_shape,
                first.shape,
                first.dtype,
                cpu_share=self.config.summary_cpu_share,
            )
        self._opened = True

    def _write(self, placement: Placement, frame: Frame) -> None:
        """Write a placed frame now, or hand it to the compression pool (written in order later)."""
        if not self._opened:
            try:
                self._open_file(frame)
            except Exception as exc:  # e.g. disk full, or metadata the writer refuses
                logger.exception("acquisition %s: cannot create %s", self.acq_id, self.file_path)
                self._open_error = f"cannot create the file: {type(exc).__name__}: {exc}"
                self._frame_shape = None
                self._drop(DropReason.WRITE_ERROR, frame, self._open_error)
                return
        position, channel_index = placement
        if frame.codec is self._writer.filter_codec and frame.codec is not Codec.RAW:
            if not self._compression.empty:  # keep file order = arrival order
                self._write_pending(block=True)
            self._store(position, channel_index, frame.payload, frame)
            return
        self._compression.add(position, channel_index, frame)
        self._write_pending(block=self._compression.full)

    def _write_pending(self, block: bool) -> None:
        """Write the compressed frames that are ready, oldest first; ``block``: wait for all."""
        for position, channel_index, frame, chunk in self._compression.ready(block):
            if isinstance(chunk, DecodeError):
                self._drop(_reason(chunk), frame, str(chunk))
            elif isinstance(chunk, Exception):
                self._drop(DropReason.CORRUPT, frame, f"{type(chunk).__name__}: {chunk}")
            else:
                self._store(position, channel_index, chunk, frame)

    def _store(self, position: int, channel_index: int, chunk: Any, frame: Frame) -> None:
        t0 = time.perf_counter()
        try:
            self._bytes_written += self._writer.write(position, channel_index, chunk, frame)
        except DecodeError as exc:
            self._drop(_reason(exc), frame, str(exc))
            return
        except Exception as exc:
            self._drop(DropReason.WRITE_ERROR, frame, f"{type(exc).__name__}: {exc}")
            return
        dt = time.perf_counter() - t0
        self._written += 1
        self._latency_sum += dt
        self._latency_counts[bisect.bisect_left(LATENCY_BUCKETS, dt)] += 1
        if self._summary is not None:
            self._summary.offer(position, frame)

    def _drop(self, reason: DropReason, frame: Frame, detail: str) -> None:
        self._write_dropped[reason.value] = self._write_dropped.get(reason.value, 0) + 1
        logger.warning(
            "frame %d (%s) dropped: %s: %s", frame.frame_id, frame.channel, reason.value, detail
        )

    def _tick(self, now: float) -> float:
        """Once a second: update the rates and tell the listener."""
        t0, n0 = self._rate_mark
        fps = (self._written - n0) / (now - t0) if now > t0 else 0.0
        self._rate = (fps, fps * self._frame_nbytes / 1e6)
        self._rate_mark = (now, self._written)
        self._notify()
        return now + 1.0

    def _finish(self, state: AcquisitionState, reason: str | None) -> None:
        """Write what is pending, close (and rename) the file, publish the final state."""
        with self._lock:
            self._error = self._error or (reason if state == AcquisitionState.FAILED else None)
        self._set_state(AcquisitionState.FINISHING)
        try:
            self._write_pending(block=True)  # frames already received are never thrown away
        except Exception:
            logger.exception("acquisition %s: writing pending frames failed", self.acq_id)
        if self._detector is not None and self._detector_armed:
            # completed: disarm (the detector sends the end, if it has not); otherwise stop it,
            # so that no armed detector is left streaming to nobody
            command = (
                self._detector.disarm
                if state == AcquisitionState.COMPLETED
                else self._detector.abort
            )
            try:
                command()
            except Exception as exc:
                logger.warning("detector %s failed: %s", command.__name__, exc)
        try:
            self._writer.close(
                state, self.counters(final=True), self._summary if self._opened else None
            )
        except Exception as exc:
            logger.exception("closing %s failed", self.file_path)
            self._error = self._error or f"close failed: {exc}"
            state = AcquisitionState.FAILED
        finally:
            with self._lock:
                self._state = state
            self._finished_at = _now_iso()
            self._done.set()
            logger.info(
                "acquisition %s %s: %s", self.acq_id, state.value, self.counters().model_dump()
            )
            self._notify()
