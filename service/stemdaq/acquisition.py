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
from pathlib import Path

from stemdaq import preflight, reporting
from stemdaq.config import AcquisitionConfig
from stemdaq.detector_session import DetectorSession
from stemdaq.errors import ConfigError, StemdaqError, StreamError
from stemdaq.models import AcquisitionInfo, AcquisitionState, Counters, SeriesStart
from stemdaq.outcome import end_state, verify_after_failure
from stemdaq.rank import LATENCY_BUCKETS, DataPath, Signals
from stemdaq.receiver import ZmqSource
from stemdaq.rows import FlushRequests, RowCounter
from stemdaq.threadnames import named
from stemdaq.writer import NexusWriter, SummaryAccumulator
from stemdaq.writer.filesafety import describe_write_error

logger = logging.getLogger(__name__)

__all__ = ["LATENCY_BUCKETS", "Acquisition"]


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
    expected_positions
        Scan positions this process owns (a rank of a scale-out acquisition); default all.
    hold_starts
        Hold series starts back until :meth:`expect_series` names the detector's (a rank of
        a scale-out acquisition in active mode: the service arms the detector).
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
        expected_positions: int | None = None,
        hold_starts: bool = False,
    ) -> None:
        self.config = config
        self.file_path = Path(file_path)
        self.acq_id = acq_id
        self._notify = reporting.Notifier(on_change, self.info)
        self._rcvhwm = queue_size
        # the receiver already walked every compressed frame's block table: not twice
        self._writer = NexusWriter(
            self.file_path, config, validate_framing=False, overwrite=overwrite
        )
        self._writer.owned_positions = expected_positions
        self._signals = Signals()
        self._hold_starts = hold_starts
        self._data = DataPath(
            config,
            self._writer,
            self._signals,
            name=f"acquisition {acq_id}",
            queue_bytes=queue_bytes,
            compress_workers=compress_workers,
            on_tick=self._on_tick,
            on_series_start=self._on_series_start,
            expected_positions=expected_positions,
        )
        self._detector: DetectorSession | None = None
        self._state = AcquisitionState.ARMED
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: str | None = None
        self._warnings: list[str] = []
        self._times = reporting.Times()
        self._final_counters: Counters | None = None
        self._elapsed: float | None = None  # frozen when the file is closed
        self._rows = RowCounter(config.scan_shape)
        self._flushes = FlushRequests()  # served by the data thread at its tick

    # -- control side -------------------------------------------------------------------------

    @property
    def state(self) -> AcquisitionState:
        """Current life-cycle state."""
        return self._state

    @property
    def series_start(self) -> SeriesStart | None:
        """The start message of the series being written (None before it came)."""
        return self._data.start

    @property
    def summary(self) -> SummaryAccumulator | None:
        """The summaries and live view (None before the first frame or with summary off)."""
        return self._data.summary

    @property
    def detector_was_armed(self) -> bool:
        """True once the detector was armed (a failure after that is not a mere refusal)."""
        return self._detector is not None and self._detector.armed

    @property
    def warnings(self) -> list[str]:
        """Everything worth knowing so far (the data thread's and the control side's)."""
        detector = self._detector.warnings if self._detector is not None else []
        return [*self._warnings, *detector, *self._data.warnings]

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
        data = named(self._run, args=(source,), name=f"stemdaq-data-{self.acq_id}")
        self._threads = [data]
        if self.config.detector_url or self._hold_starts:
            self._signals.hold_starts = True  # the series id is known once armed
        data.start()
        if self._detector is not None:
            try:
                trigger = self._detector.arm_and_trigger(
                    source.endpoint, self._signals, self._done.is_set
                )
            except Exception as exc:
                self._fail(f"{exc}")
                raise
            if trigger is not None:
                self._threads.append(trigger)
        self._notify()

    def _prepare(self) -> ZmqSource:
        """Every check that can refuse the acquisition; returns the connected stream."""
        cfg = self.config
        endpoint = cfg.resolved_stream_endpoint()
        preflight.check_before_detector(cfg, self.file_path)
        if cfg.detector_url:
            self._detector = DetectorSession(cfg, f"acquisition {self.acq_id}")
        self._writer.detector_config = preflight.check_with_detector(
            cfg, self.file_path, self._detector.client if self._detector else None
        )
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
        self._times.finished_at = reporting.now_iso()
        self._writer.release()
        self._done.set()
        if isinstance(exc, StemdaqError):
            return
        raise ConfigError(self._error) from exc

    def expect_series(self, series_id: int) -> None:
        """Open only series ``series_id`` (held starts are released; see ``hold_starts``)."""
        self._signals.expected_series = series_id
        self._signals.hold_starts = False

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
        if self._detector is not None:
            self._detector.command_in_background("disarm")

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

    def flush(self, timeout: float = 5.0) -> tuple[bool, AcquisitionInfo | None]:
        """Make every frame counted visible to SWMR readers now: (True, the acquisition as the
        data thread saw it right after the flush: SWMR readers see what it counts) once done.

        The data thread flushes at its next tick (within about a second); once the file is
        closed (or before it is opened) there is nothing to flush: (True, None) at once.
        """
        if not self._data.opened:
            return True, None
        return self._flushes.request(timeout)

    def _on_tick(self) -> None:
        """Data thread, about once a second: serve flush requests, tell the listener."""
        self._flushes.serve(self._writer.flush, f"acquisition {self.acq_id}", self.info)
        self._notify()

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
        acc = self._data.accounts
        return reporting.cumulative(acc.latency_counts, acc.latency_sum)

    def counters(self, final: bool | None = None) -> Counters:
        """Frame accounting, merged from receiver and writer; ``missing`` only once final."""
        if self._final_counters is not None:
            return self._final_counters
        return self._data.counters(bool(final or (final is None and self._state.is_final)))

    def info(self) -> AcquisitionInfo:
        """A cheap, thread-safe snapshot for the API and the CLI."""
        return reporting.take(
            self.acq_id,
            self.config,
            self._state,
            self.file_path,
            self._data,
            self._writer,
            self._rows,
            self.counters(),
            self._elapsed if self._elapsed is not None else self._elapsed_now(),
            self._done.is_set(),
            self._times,
            self._error,
            self.warnings,
            self._detector.notes if self._detector else None,
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

    def _on_series_start(self, start: SeriesStart) -> None:
        self._times.started_at = reporting.now_iso()
        self._set_state(AcquisitionState.ACQUIRING)

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
        if self._detector is not None:
            # completed: disarm (the detector sends the end, if it has not); otherwise stop it,
            # so that no armed detector is left streaming to nobody
            self._detector.command("disarm" if state is AcquisitionState.COMPLETED else "abort")
        counters = self._data.counters(final=True)
        state, notes = end_state(
            state,
            counters,
            stopped=self._signals.stop.is_set(),
            data_warnings=self._data.warnings,
            drop_summary=self._data.drop_summary(),
        )
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
                counters, notes = verify_after_failure(self._writer.current_path, counters)
                self._warnings.extend(notes)
            if self._writer.current_path != self.file_path and self._data.opened:
                self._warnings.append(f"the file is {self._writer.current_path}")
            self._final_counters = counters
            self._elapsed = self._elapsed_now()
            with self._lock:
                self._state = state
            self._times.finished_at = reporting.now_iso()
            self._done.set()
            self._flushes.close()  # waiting flush requests: the file is closed, all on disk
            logger.info("acquisition %s %s: %s", self.acq_id, state.value, counters.model_dump())
            self._notify()
