"""One acquisition: checks, the detector, the data thread, the state. Knows nothing about HTTP.

:meth:`Acquisition.start` does everything that can fail *before* anything irreversible: the
config and memory bounds, the output (reserved exclusively as an empty ``<file>.partial``),
the stream endpoint (something listens), the free space. Only then, in active mode, is the
detector configured and armed; its start message must arrive on the stream (with the series
id the detector returned) within ``arm_timeout`` before it is triggered, so a wrong stream
endpoint never makes the beam scan the sample for nothing.

Threads::

    data thread     stemdaq.rank.DataPath.run: receive -> place -> write, then close the file
    compress pool   frames that arrive uncompressed (codecs release the GIL)
    summary thread  (SummaryAccumulator) sums the frames it has time for, never blocks writing
    trigger thread  active mode: SIMPLON ``trigger`` blocks for the whole series on a real DCU

Back-pressure, not loss: while the data thread writes it does not read, so messages wait in
ZeroMQ's receive queue (``rcvhwm``) and then in the detector's send queue. Errors in a
background thread are stored and surface in :meth:`Acquisition.info` / ``state``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from stemdaq import preflight
from stemdaq.config import AcquisitionConfig
from stemdaq.detector import SimplonClient
from stemdaq.errors import ConfigError, StemdaqError, StreamError
from stemdaq.models import AcquisitionInfo, AcquisitionState, Counters, SeriesStart
from stemdaq.rank import LATENCY_BUCKETS, DataPath, Signals
from stemdaq.rank.datapath import NO_END
from stemdaq.receiver import ZmqSource
from stemdaq.writer import NexusWriter, probe_file
from stemdaq.writer.filesafety import describe_write_error

logger = logging.getLogger(__name__)

__all__ = ["LATENCY_BUCKETS", "Acquisition"]

STOPPED = "stopped on request"
_VERIFY_TIMEOUT = 60.0  # seconds for the check of a file after a failure


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
    overwrite
        Allow the final file name to exist already (it is replaced at close).
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
        overwrite: bool = False,
        on_change: Callable[[AcquisitionInfo], None] | None = None,
    ) -> None:
        self.config = config
        self.file_path = Path(file_path)
        self.acq_id = acq_id
        self._on_change = on_change
        self._rcvhwm = queue_size
        # the receiver already walked every compressed frame's block table: not twice
        self._writer = NexusWriter(
            self.file_path, config, validate_framing=False, overwrite=overwrite
        )
        self._signals = Signals()
        self._data = DataPath(
            config,
            self._writer,
            self._signals,
            name=f"acquisition {acq_id}",
            queue_bytes=queue_bytes,
            compress_workers=compress_workers,
            on_tick=self._notify,
            on_series_start=self._on_series_start,
        )
        self._detector: SimplonClient | None = None
        self._detector_armed = False
        self._notify_lock = threading.Lock()
        self._state = AcquisitionState.ARMED
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: str | None = None
        self._warnings: list[str] = []
        self._notes: list[str] = []  # what was negotiated with the detector, for the record
        self._created_at = _now_iso()
        self._started_at: str | None = None
        self._finished_at: str | None = None
        self._final_counters: Counters | None = None
        self._elapsed: float | None = None  # frozen when the file is closed

    # -- control side -------------------------------------------------------------------------

    @property
    def state(self) -> AcquisitionState:
        """Current life-cycle state."""
        return self._state

    @property
    def detector_was_armed(self) -> bool:
        """True once the detector was armed (a failure after that is not a mere refusal)."""
        return self._detector_armed

    @property
    def warnings(self) -> list[str]:
        """Everything worth knowing so far (the data thread's and the control side's)."""
        return [*self._warnings, *self._data.warnings]

    def start(self) -> None:
        """Check, reserve the file, connect; in active mode also arm, await the start, trigger.

        Raises
        ------
        ConfigError, PathError, StorageError, StreamError
            Refused before anything irreversible (no file, detector untouched).
        DetectorError
            The detector refused, or (StreamError) its start never came on the stream; the
            detector is disarmed again.
        """
        try:
            source = self._prepare()
        except Exception as exc:
            self._refuse(exc)
            raise
        data = threading.Thread(
            target=self._run, args=(source,), name=f"stemdaq-data-{self.acq_id}", daemon=True
        )
        self._threads = [data]
        if self.config.detector_url:
            self._signals.hold_starts = True  # the series id is known once armed
        data.start()
        if self.config.detector_url:
            try:
                self._arm_detector(source.endpoint)
            except Exception as exc:
                self._fail(f"{exc}")
                raise
        self._notify()

    def _prepare(self) -> ZmqSource:
        """Every check that can refuse the acquisition; returns the connected stream."""
        cfg = self.config
        endpoint = cfg.resolved_stream_endpoint()
        preflight.check_memory(cfg)
        preflight.check_output(self.file_path)
        preflight.check_stream(endpoint)
        frame_bytes = None
        if cfg.detector_url:
            self._detector = SimplonClient(cfg.detector_url, simplon_version=cfg.simplon_version)
            frame_bytes = preflight.detector_frame_bytes(self._detector)
            self._writer.detector_config = preflight.detector_calibration(self._detector)
        preflight.check_space(cfg, self.file_path.parent, frame_bytes)
        self._writer.reserve()
        try:  # connect before arming: the start message must reach us
            return ZmqSource(endpoint, rcvhwm=self._rcvhwm)
        except Exception as exc:
            self._writer.release()
            raise StreamError(f"cannot connect to the stream {endpoint}: {exc}") from exc

    def _refuse(self, exc: BaseException) -> None:
        """A refused start: nothing was armed, no file was made; the state says why."""
        self._error = str(exc) if isinstance(exc, StemdaqError) else f"{type(exc).__name__}: {exc}"
        self._state = AcquisitionState.FAILED
        self._finished_at = _now_iso()
        self._writer.release()
        self._done.set()
        if isinstance(exc, StemdaqError):
            return
        raise ConfigError(self._error) from exc

    def _arm_detector(self, endpoint: str) -> None:
        """Configure and arm; trigger once the detector's start arrived on ``endpoint``."""
        det = self._detector or SimplonClient(
            self.config.detector_url or "", simplon_version=self.config.simplon_version
        )
        self._detector = det
        n = self.config.n_positions
        negotiated = det.configure_scan(n)
        logger.info("acquisition %s: %s", self.acq_id, negotiated.describe())
        self._notes.append(negotiated.describe())
        if self._cancelled():
            return
        seq = det.arm()
        self._detector_armed = True
        self._signals.expected_series = seq
        self._signals.hold_starts = False
        logger.info("detector armed for %d images (sequence id %s)", n, seq)
        timeout = self.config.arm_timeout
        deadline = time.monotonic() + timeout
        while not self._signals.started.wait(0.05):
            if self._cancelled() or self._done.is_set():
                return
            if time.monotonic() > deadline:
                raise StreamError(
                    f"the detector at {self.config.detector_url} was armed (series {seq}) but "
                    f"its start message did not arrive on {endpoint} within {timeout:g} s "
                    "(arm_timeout): that endpoint is not this detector's stream, or its stream "
                    "is disabled; set stream_endpoint. The detector was disarmed, not triggered"
                )
        trigger = threading.Thread(
            target=self._trigger, name=f"stemdaq-trigger-{self.acq_id}", daemon=True
        )
        self._threads.append(trigger)
        trigger.start()

    def _cancelled(self) -> bool:
        return self._signals.abort.is_set() or self._signals.stop.is_set()

    def _trigger(self) -> None:
        det = self._detector
        if det is None:
            return
        try:
            det.trigger()
        except Exception as exc:  # the series may still complete; record and go on
            if not self._cancelled():
                logger.warning("detector trigger failed: %s", exc)
                self._warnings.append(f"trigger failed: {exc}")

    def stop(self) -> None:
        """End the series now and keep what was recorded. Non-blocking.

        Active mode: the detector is disarmed (it ends the series and sends its end message);
        every frame received before the end is written, the file is closed cleanly and the
        positions never scanned stay gaps. Passive mode: close on the end message, or after
        ``end_timeout`` s of silence.
        """
        if self._signals.stop.is_set() or self._done.is_set():
            return
        self._signals.stop.set()
        if self._detector is not None and self._detector_armed:
            threading.Thread(
                target=self._detector_call,
                args=("disarm",),
                name=f"stemdaq-stop-{self.acq_id}",
                daemon=True,
            ).start()

    def _detector_call(self, command: str) -> None:
        det = self._detector
        if det is None:
            return
        try:
            getattr(det, command)()
        except Exception as exc:
            logger.warning("detector %s failed: %s", command, exc)
            self._warnings.append(f"detector {command} failed: {exc}")

    def abort(self) -> None:
        """Close now; frames not received yet stay gaps in the file. Non-blocking.

        The data thread stops reading, tells the detector to abort (active mode) and closes.
        """
        self._signals.abort.set()

    def _fail(self, message: str) -> None:
        """Give up: the data thread closes the file as FAILED with ``message``."""
        with self._lock:
            self._error = self._error or message
        self._signals.abort.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the file is closed; True if it is."""
        return self._done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Abort if running, wait (up to ``timeout`` s) for the threads, release resources.

        Returns False if the data thread did not finish in time (resources are then left to it).
        """
        if not self._threads:  # never started: nothing runs, nothing to close
            self._writer.release()
            self._done.set()
        if not self._done.is_set():
            self.abort()
        if not self._done.wait(timeout):
            logger.error("acquisition %s did not finish within %s s", self.acq_id, timeout)
            return False
        for t in self._threads:
            t.join(timeout=5)
        self._data.compression.shutdown()
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
        for c in self._data.latency_counts:
            total += c
            cumulative.append(total)
        return [*LATENCY_BUCKETS, float("inf")], cumulative, self._data.latency_sum

    def counters(self, final: bool | None = None) -> Counters:
        """Frame accounting, merged from receiver and writer; ``missing`` only once final."""
        if self._final_counters is not None:
            return self._final_counters
        return self._data.counters(bool(final or (final is None and self._state.is_final)))

    def info(self) -> AcquisitionInfo:
        """A cheap, thread-safe snapshot for the API and the CLI."""
        data = self._data
        counters = self.counters()
        elapsed = self._elapsed if self._elapsed is not None else self._elapsed_now()
        final = self._state.is_final
        fps, mbs = data.rate if not final else (0.0, 0.0)
        eta = None
        if self._state == AcquisitionState.ACQUIRING and fps > 0:
            eta = max(0.0, (counters.frames_expected - counters.frames_written) / fps)
        frame_shape = data.frame_shape
        shape = [*self.config.scan_shape, *frame_shape] if frame_shape else None
        path = (self._writer.current_path if final and data.opened else self.file_path).resolve()
        return AcquisitionInfo(
            id=self.acq_id,
            state=self._state,
            file_path=str(path),
            file_uri=path.as_uri(),
            dataset_path=self._writer.dataset_path,
            shape=shape,
            dtype=data.dtype,
            chunk_shape=list(chunks) if (chunks := self._writer.chunk_shape) else None,
            channels=list(data.channels),
            series_id=data.start.series_id if data.start else None,
            frames_expected=counters.frames_expected,
            frames_written=counters.frames_written,
            frames_dropped=counters.frames_dropped,
            counters=counters,
            frames_per_second=fps,
            mb_per_second=mbs,
            queue_depth=len(data.compression),
            created_at=self._created_at,
            started_at=self._started_at,
            finished_at=self._finished_at,
            elapsed_seconds=elapsed,
            eta_seconds=eta,
            error=self._error,
            warnings=self.warnings,
            detector_protocol="; ".join(self._notes) or None,
            config=self.config.model_dump(mode="json"),
        )

    # -- background threads -------------------------------------------------------------------

    def _run(self, source: ZmqSource) -> None:
        """The data thread: receive and write until the series is over, then close the file."""
        state: AcquisitionState = AcquisitionState.FAILED
        reason: str | None = "data thread ended unexpectedly"
        try:
            with source:
                state, reason = self._data.run(source)
        except Exception as exc:  # stored and surfaced; the file is still closed below
            logger.exception("acquisition %s: data thread failed", self.acq_id)
            state, reason = AcquisitionState.FAILED, f"{type(exc).__name__}: {exc}"
        if state is AcquisitionState.ABORTED and self._error is not None:
            state = AcquisitionState.FAILED  # _fail() asked for this stop
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

    def _on_series_start(self, start: SeriesStart) -> None:
        self._started_at = _now_iso()
        self._set_state(AcquisitionState.ACQUIRING)

    def _end_state(
        self, state: AcquisitionState, counters: Counters
    ) -> tuple[AcquisitionState, list[str]]:
        """``completed`` only when every position is written and the series ended properly."""
        notes: list[str] = []
        if self._signals.stop.is_set() and state is AcquisitionState.COMPLETED:
            notes.append(
                f"{STOPPED}: {counters.frames_written} of {counters.frames_expected} "
                "frames recorded"
            )
        if counters.gaps:
            notes.append(
                f"{counters.gaps} of {counters.frames_expected} frames missing (gaps in the "
                f"file: written = 0): {counters.frames_missing} never received"
                + (
                    f", {counters.gaps - counters.frames_missing} dropped"
                    if counters.gaps > counters.frames_missing
                    else ""
                )
            )
        summary = self._data.drop_summary()
        if summary:
            notes.append(summary)
        no_end = any(w.startswith(NO_END) for w in self._data.warnings)
        if state is AcquisitionState.COMPLETED and (counters.gaps or no_end):
            state = AcquisitionState.COMPLETED_WITH_GAPS
        return state, notes

    def _verify(self, counters: Counters) -> Counters:
        """After a failure: check, in a time-bounded child process, that every frame the
        bookkeeping claims has its chunk in the file; the counters say what the file holds."""
        path = self._writer.current_path
        probe = probe_file(path, timeout=_VERIFY_TIMEOUT, verify="index")
        if not probe.readable:
            self._warnings.append(
                f"the file could not be verified after the failure: {probe.error}"
            )
            return counters
        verified = sum(im.frames_verified or 0 for im in probe.images)
        claimed = probe.frames_claimed
        if verified < claimed:
            self._warnings.append(
                f"{claimed - verified} frames the file's written mask claims have no data in "
                f"{path.name}: treat them as gaps"
            )
            logger.error(
                "acquisition %s: %d claimed frames unreadable", self.acq_id, claimed - verified
            )
        if verified != counters.frames_written:
            gaps = max(0, counters.frames_expected - verified)
            counters = counters.model_copy(
                update={
                    "frames_written": verified,
                    "gaps": gaps,
                    "frames_missing": max(
                        0, counters.frames_missing + counters.frames_written - verified
                    ),
                }
            )
        return counters

    def _elapsed_now(self) -> float:
        t0 = self._data.t_start
        return time.monotonic() - t0 if t0 is not None else 0.0

    def _finish(self, state: AcquisitionState, reason: str | None) -> None:
        """Write what is pending, stop the detector, close the file, publish the final state."""
        with self._lock:
            self._error = self._error or (reason if state == AcquisitionState.FAILED else None)
        self._set_state(AcquisitionState.FINISHING)
        try:
            self._data.write_pending()  # frames already received are never thrown away
        except Exception:
            logger.exception("acquisition %s: writing pending frames failed", self.acq_id)
        if self._detector is not None and self._detector_armed:
            # completed: disarm (the detector sends the end, if it has not); otherwise stop it,
            # so that no armed detector is left streaming to nobody
            self._detector_call("disarm" if state is AcquisitionState.COMPLETED else "abort")
        counters = self._data.counters(final=True)
        state, notes = self._end_state(state, counters)
        self._warnings.extend(notes)
        try:
            self._writer.close(
                state,
                counters,
                self._data.summary if self._data.opened else None,
                warnings=self.warnings,
                error=self._error,
            )
        except Exception as exc:  # e.g. the disk is full: the frames flushed stay readable
            reason = self._writer.storage_error or describe_write_error(exc)
            logger.error("closing %s failed: %s", self._writer.current_path, reason)
            self._error = self._error or f"close failed: {reason}"
            self._warnings.append(
                "the file could not be finished after the storage error: it keeps its "
                ".partial name, and every frame its written mask claims was flushed with its "
                "data; open it with h5py.File(p, 'r', swmr=True) or run `stemdaq inspect`"
            )
            state = AcquisitionState.FAILED
        finally:
            if state is AcquisitionState.FAILED and self._data.opened:
                counters = self._verify(counters)
            if self._writer.current_path != self.file_path and self._data.opened:
                self._warnings.append(f"the file is {self._writer.current_path}")
            self._final_counters = counters
            self._elapsed = self._elapsed_now()
            with self._lock:
                self._state = state
            self._finished_at = _now_iso()
            self._done.set()
            logger.info("acquisition %s %s: %s", self.acq_id, state.value, counters.model_dump())
            self._notify()
