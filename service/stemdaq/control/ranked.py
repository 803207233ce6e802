"""One acquisition over N writer ranks: the engine behind ``stemdaq serve --ranks N``.

:class:`RankedAcquisition` is what :class:`~stemdaq.manager.AcquisitionManager` drives
(``AcquisitionLike``: start, stop, abort, wait, close, info), so the REST API does not change.
It talks to the ranks and the fan over HTTP + JSON::

    start:  checks, <name>.partial reserved -> POST /rank/arm to every rank (each reserves
            <stem>_rNN.h5.partial and connects to its fan port) -> POST /fan/arm
            -> active mode: arm the detector, tell the ranks its series id (POST /rank/series),
               trigger once every rank opened that series
    follow: GET /rank and GET /fan every 0.2 s; the master (VDS over the rank files) is made
            once every rank that owns rows has its file (knows the frames' dtype and shape)
    end:    every rank closed (or lost) -> bookkeeping merged into the master, outcome, rename

A rank that dies (its process ended, or it stops answering, or it comes back with another
acquisition) is *lost*: its blocks stay gaps (zeros, written = 0 in the master), the others
complete, and the acquisition ends ``failed`` with the rank and the reason in ``error``. The
ranks' and the fan's last reports, and which ranks are lost, are kept by
:class:`~stemdaq.control.roster.RankRoster` (``control/roster.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from stemdaq import preflight, reporting
from stemdaq.config import AcquisitionConfig
from stemdaq.control.cluster import RankCluster
from stemdaq.control.links import RankLinks
from stemdaq.control.live import RankedLiveEngine
from stemdaq.control.merge import merge_counters, merge_state
from stemdaq.control.roster import RankRoster
from stemdaq.control.snapshot import rank_infos, series_start
from stemdaq.detector_session import DetectorSession
from stemdaq.errors import ConfigError, StemdaqError
from stemdaq.models import AcquisitionInfo, AcquisitionState, Codec, Counters
from stemdaq.rank import LATENCY_BUCKETS, Signals
from stemdaq.threadnames import named
from stemdaq.writer.master import MasterWriter

logger = logging.getLogger(__name__)

_POLL = 0.2  # seconds between status polls


class RankedAcquisition:
    """An acquisition written by ``cluster``'s ranks into one master file (module docstring)."""

    def __init__(
        self,
        config: AcquisitionConfig,
        file_path: Path,
        *,
        cluster: RankCluster,
        acq_id: str = "0",
        overwrite: bool = False,
        on_change: Any = None,
        **_unused: Any,  # queue_size, compress_workers: each rank has its own settings
    ) -> None:
        self.config = config
        self.file_path = Path(file_path)
        self.acq_id = acq_id
        self.cluster = cluster
        self._notify = reporting.Notifier(on_change, self.info)
        self._overwrite = overwrite
        n = cluster.ranks
        self.master = MasterWriter(
            self.file_path, config, ranks=n, block_rows=cluster.block_rows, overwrite=overwrite
        )
        self._links = RankLinks(cluster, acq_id)
        self._ranks = RankRoster(cluster, acq_id, self._links)
        self._state = AcquisitionState.ARMED
        self._series_sent = False  # the detector's series id told to the ranks
        self._signals = Signals()
        self._detector: DetectorSession | None = None
        self._done = threading.Event()
        self._monitor: threading.Thread | None = None
        self._trigger: threading.Thread | None = None
        self._error: str | None = None
        self._warnings: list[str] = []
        self._times = reporting.Times()
        self._final: Counters | None = None
        self._t_start: float | None = None
        self._elapsed: float | None = None
        self.live = RankedLiveEngine(cluster, acq_id, config, self._ranks.lost)

    @property
    def summary(self) -> RankedLiveEngine | None:
        """The ranks' live views merged (None until a rank has maps; see control/live.py)."""
        return self.live if self.config.summary and self.live.maps is not None else None

    # -- AcquisitionLike ------------------------------------------------------------------------

    @property
    def state(self) -> AcquisitionState:
        """Current life-cycle state."""
        return self._state

    def start(self) -> None:
        """Check, reserve the master, arm every rank and the fan; in active mode also the
        detector (triggered once the fan forwarded its start). Refusals raise StemdaqError."""
        armed: list[int] = []
        try:
            self._prepare()
            for i in range(self.cluster.ranks):
                self._arm_rank(i)
                armed.append(i)
            self._links.arm_fan(self.config.resolved_stream_endpoint(), self.config.scan_shape[1])
        except Exception as exc:
            self._links.to_ranks("abort", skip=set(range(self.cluster.ranks)) - set(armed))
            self._refuse(exc)
            raise
        self._monitor = named(self._follow, name=f"stemdaq-ranks-{self.acq_id}")
        self._monitor.start()
        if self.config.summary:
            self.live.start()
        if self._detector is not None:
            try:
                self._trigger = self._detector.arm_and_trigger(
                    self.config.resolved_stream_endpoint(), self._signals, self._done.is_set
                )
            except Exception as exc:
                self._fail(str(exc))
                raise
        self._notify()

    def stop(self) -> None:
        """End the series and keep what was recorded (every rank; the detector is disarmed)."""
        if self._signals.stop.is_set() or self._done.is_set():
            return
        self._signals.stop.set()
        if self._detector is not None:
            self._detector.command_in_background("disarm")
        self._links.to_ranks("stop", skip=self._ranks.lost)

    def abort(self) -> None:
        """Close now: the fan stops routing, every rank aborts."""
        self._signals.abort.set()
        self._links.abort_fan()
        self._links.to_ranks("abort", skip=self._ranks.lost)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the master is closed; True if it is."""
        return self._done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Abort if running and wait (up to ``timeout`` s) for the master to close."""
        if self._monitor is None:
            self.master.release()
            self._done.set()
        if not self._done.is_set():
            self.abort()
        if not self._done.wait(timeout):
            return False
        if self._monitor is not None:
            self._monitor.join(5)
        if self._detector is not None:
            self._detector.close()
        self.live.close()
        self._links.close()
        return True

    def latency_histogram(self) -> tuple[list[float], list[int], float]:
        """Write durations are each rank's (its ``/metrics``): none here."""
        return [*LATENCY_BUCKETS, float("inf")], [0] * (len(LATENCY_BUCKETS) + 1), 0.0

    def counters(self) -> Counters:
        """The ranks' counters added up (final: the master's written mask says what is in)."""
        if self._final is not None:
            return self._final
        return merge_counters(self.config, self._ranks.status, self._ranks.fan, final=False)

    def info(self) -> AcquisitionInfo:
        """A snapshot for the API: totals and one :class:`RankInfo` per rank."""
        counters = self.counters()
        final = self._state.is_final
        live = self._ranks.reported()
        first = next((s for s in live if s.get("dtype")), None)
        fps = 0.0 if final else sum(s.get("frames_per_second", 0.0) for s in live)
        mbs = 0.0 if final else sum(s.get("mb_per_second", 0.0) for s in live)
        made = self.master.frame_shape is not None  # no frame at all: no master either
        path = (self.master.current_path if final and made else self.file_path).resolve()
        elapsed = self._elapsed if self._elapsed is not None else self._elapsed_now()
        eta = None
        if self._state is AcquisitionState.ACQUIRING and fps > 0:
            eta = max(0.0, (counters.frames_expected - counters.frames_written) / fps)
        return AcquisitionInfo(
            id=self.acq_id,
            state=self._state,
            file_path=str(path),
            file_uri=path.as_uri(),
            dataset_path=self.master.dataset_path,
            shape=first.get("shape") if first else None,
            dtype=first.get("dtype") if first else None,
            chunk_shape=first.get("chunk_shape") if first else None,
            channels=first.get("channels", []) if first else [],
            series_id=first.get("series_id") if first else None,
            frames_expected=counters.frames_expected,
            frames_written=counters.frames_written,
            frames_dropped=counters.frames_dropped,
            counters=counters,
            frames_per_second=fps,
            mb_per_second=mbs,
            queue_depth=sum(s.get("queue_depth", 0) for s in live),
            created_at=self._times.created_at,
            started_at=self._times.started_at,
            finished_at=self._times.finished_at,
            elapsed_seconds=elapsed,
            eta_seconds=eta,
            error=self._error,
            warnings=list(self._warnings),
            detector_protocol="; ".join(self._detector.notes) if self._detector else None,
            config=self.config.model_dump(mode="json"),
            ranks=rank_infos(self.cluster.rank_urls, self._ranks.status, self._ranks.lost),
        )

    # -- start ----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        cfg = self.config
        preflight.check_before_detector(cfg, self.file_path)
        if cfg.detector_url:
            self._detector = DetectorSession(cfg, f"acquisition {self.acq_id}")
        self.master.detector_config = preflight.check_with_detector(
            cfg, self.file_path, self._detector.client if self._detector else None
        )
        self.master.reserve()

    def _arm_rank(self, index: int) -> None:
        config = self.config.model_copy(
            update={"detector_url": None, "stream_endpoint": self.cluster.stream_endpoint(index)}
        )
        path = str(self.master.rank_files[index].resolve())
        self._links.arm_rank(
            index,
            config.model_dump(mode="json"),
            path,
            overwrite=self._overwrite,
            hold_starts=bool(self.config.detector_url),  # until the detector's series is known
        )

    def _refuse(self, exc: BaseException) -> None:
        self._error = str(exc) if isinstance(exc, StemdaqError) else f"{type(exc).__name__}: {exc}"
        self._state = AcquisitionState.FAILED
        self._times.finished_at = reporting.now_iso()
        self.master.release()
        self._done.set()
        if not isinstance(exc, StemdaqError):
            raise ConfigError(self._error) from exc

    def _fail(self, message: str) -> None:
        self._error = self._error or message
        self.abort()

    # -- follow ---------------------------------------------------------------------------------

    def _follow(self) -> None:
        next_note = 0.0
        try:
            while True:
                self._poll()
                if not self.master.is_open and self.master.frame_shape is None:
                    self._maybe_open_master()
                if self._ranks.all_final():
                    break
                now = time.monotonic()
                if now >= next_note:
                    next_note = now + 1.0
                    self._notify()
                time.sleep(_POLL)
        except Exception as exc:  # stored and surfaced; the master is still finished
            logger.exception("acquisition %s: following the ranks failed", self.acq_id)
            self._error = self._error or f"{type(exc).__name__}: {exc}"
            self.abort()
        self._finish()

    def _poll(self) -> None:
        fan_error = self._ranks.poll_fan()
        if fan_error is not None and not self._error:
            self._fail(fan_error)
        series = self._signals.expected_series  # set once the detector is armed
        if series is not None and not self._series_sent:
            self._series_sent = True
            self._links.fan_series(series)
            self._links.expect_series(series, skip=self._ranks.lost)
        self._ranks.poll_ranks(self._lose)
        if self._ranks.opened():  # every rank opened the series: trigger
            self._signals.started.set()
        if self._ranks.acquiring() and self._state is AcquisitionState.ARMED:
            self._times.started_at = reporting.now_iso()
            self._t_start = time.monotonic()
            self._set_state(AcquisitionState.ACQUIRING)

    def _lose(self, index: int, why: str) -> None:
        """Rank ``index`` is lost (the roster has it): warn, and fail the acquisition."""
        message = f"rank {index} lost mid-scan: {why}; its blocks are gaps in the master"
        logger.error("acquisition %s: %s", self.acq_id, message)
        self._warnings.append(message)
        self._error = self._error or message
        self._notify()

    def _maybe_open_master(self, *, final: bool = False) -> None:
        """Make the master once every rank that owns frames made its file (a VDS source that
        is still the empty reservation would make reads fail); a lost rank is left out, and
        at the end (``final``) every rank without a file."""
        for i in range(self.cluster.ranks):
            status = self._ranks.status[i]
            has_file = bool(status and status.get("dtype"))
            if i in self._ranks.lost or (final and not has_file):
                self.master.exclude(i)
            elif self.master.owns_rows(i) and not has_file:
                return
        for status, start in zip(self._ranks.status, self._ranks.start, strict=True):
            if status is None or not status.get("dtype") or not status.get("shape"):
                continue
            shape = status["shape"]
            series = series_start(start, status)
            self.master.open(
                series,
                endpoint=self.config.resolved_stream_endpoint(),
                channels=status.get("channels") or series.channels or ("",),
                frame_shape=(int(shape[2]), int(shape[3])),
                dtype=status["dtype"],
                codec=Codec.RAW,
            )
            logger.info("acquisition %s: master %s made", self.acq_id, self.master.tmp_path)
            return

    # -- finish ---------------------------------------------------------------------------------

    def _finish(self) -> None:
        self._set_state(AcquisitionState.FINISHING)
        if self._ranks.fan.get("busy"):
            self._links.abort_fan()
            self._poll()
        if self._detector is not None:
            self._detector.command("disarm" if self._ranks.all_completed() else "abort")
        if not self.master.is_open and self.master.frame_shape is None:
            self._maybe_open_master(final=True)  # a short scan can end between two polls
        ranks = self._ranks
        for i in ranks.gone():
            note = self.master.release_dead_rank(i)
            if note:
                self._warnings.append(note)
        per_rank = self.master.merge_ranks() if self.master.is_open else None
        counters = merge_counters(
            self.config, ranks.status, ranks.fan, final=True, per_rank=per_rank
        )
        state = merge_state(ranks.status, ranks.lost, self._signals.abort.is_set(), self._error)
        ranks.add_warnings(self._warnings)
        if state is AcquisitionState.FAILED and self._error is None:
            self._error = ranks.first_error()
        self.live.close()  # the ranks' final maps, as the master takes them
        try:
            self.master.close(state, counters, None, warnings=self._warnings, error=self._error)
        except Exception as exc:
            logger.exception("acquisition %s: closing the master failed", self.acq_id)
            self._error = self._error or f"closing the master failed: {exc}"
            state = AcquisitionState.FAILED
        self._final = counters
        self._elapsed = self._elapsed_now()
        self._state = state
        self._times.finished_at = reporting.now_iso()
        self._done.set()
        logger.info("acquisition %s %s over %d ranks", self.acq_id, state.value, self.cluster.ranks)
        self._notify()

    # -- helpers --------------------------------------------------------------------------------

    def _elapsed_now(self) -> float:
        return time.monotonic() - self._t_start if self._t_start is not None else 0.0

    def _set_state(self, state: AcquisitionState) -> None:
        if self._state.is_final or self._state is state:
            return
        self._state = state
        logger.info("acquisition %s: %s", self.acq_id, state.value)
        self._notify()
