"""The service's control plane: the current config and at most one running acquisition.

:class:`AcquisitionManager` lives on the event loop. Everything that blocks (SIMPLON calls, file
creation, thread joins, history writes) runs in worker threads. What is remembered and told
(history, state order, events, totals) is :class:`stemdaq.records.Records`; the engine reports
to it through ``on_change`` from its own threads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from stemdaq.config import AcquisitionConfig, merge_config
from stemdaq.errors import BusyError, ConfigError, NotFoundError, PathError, StemdaqError
from stemdaq.eventbus import Event, Totals
from stemdaq.models import AcquisitionInfo, AcquisitionState
from stemdaq.offloop import Closers, call_in_thread
from stemdaq.paths import render_template, resolve_in_data_dir
from stemdaq.records import Records
from stemdaq.settings import Settings

logger = logging.getLogger(__name__)

_WATCH_PERIOD = 0.1  # seconds between checks for the end of the running acquisition
#: seconds an arm waits for a finished acquisition to be filed (history, slot) before 409
FILING_WAIT = 10.0
_FAIL_WAIT = 2.0  # seconds a failed start waits for the engine's threads before closing
_CLOSE_WAIT = 5.0  # seconds to wait for an engine's close() on the failure/shutdown paths
_CANCELLED_ARM = "arm cancelled (the client went away or the service is shutting down)"


class AcquisitionLike(Protocol):
    """What the manager needs from one acquisition (``stemdaq.acquisition.Acquisition``)."""

    @property
    def state(self) -> AcquisitionState: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def abort(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def close(self) -> bool | None: ...  # the engine returns whether its threads ended
    def info(self) -> AcquisitionInfo: ...
    def latency_histogram(self) -> tuple[list[float], list[int], float]: ...


AcquisitionFactory = Callable[..., AcquisitionLike]

__all__ = ["AcquisitionManager", "Event", "Totals", "merge_config"]


def _default_factory() -> AcquisitionFactory:
    from stemdaq.acquisition import Acquisition

    return Acquisition


class AcquisitionManager:
    """Arms, follows and records acquisitions; one at a time.

    Parameters
    ----------
    settings
        Service settings: data directory, state directory, default acquisition config.
    factory
        Builds an acquisition (default :class:`stemdaq.acquisition.Acquisition`); tests pass fakes.
    """

    def __init__(self, settings: Settings, *, factory: AcquisitionFactory | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self._factory = factory
        self._config = settings.acquisition
        self._state_dir = Path(settings.resolved_state_dir).resolve()
        self._records = Records(self._state_dir)
        self._current: AcquisitionLike | None = None
        self._current_id: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._arm_lock = asyncio.Lock()
        self._closers = Closers()
        self._seq = itertools.count(1)

    @property
    def totals(self) -> Totals:
        """Lifetime totals of the acquisitions filed since the service started."""
        return self._records.totals

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the history (marking interrupted acquisitions failed)."""
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        last = await self._records.start()
        self._seq = itertools.count(last + 1)

    async def close(self, timeout: float = 30.0) -> None:
        """Abort a running acquisition, wait for its file to close, end every event stream.

        Bounded: about ``timeout`` s for the engine and its watcher together (at least 2 s for the
        watcher), then a few seconds for the engine's ``close()``; whatever is still running then
        is logged and left behind (daemon threads).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        acq = self._current
        if acq is not None and not acq.state.is_final:
            logger.warning("shutting down: aborting acquisition %s", self._current_id)
            await asyncio.to_thread(acq.abort)
            await asyncio.to_thread(acq.wait, timeout)
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            remaining = max(2.0, deadline - loop.time())
            done, _ = await asyncio.wait({watcher}, timeout=remaining)
            if not done:
                logger.error(
                    "shutting down: acquisition %s not filed within %.0f s; giving up on it",
                    self._current_id,
                    timeout,
                )
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        if self._current is not None:  # the watcher did not get there (timeout)
            await self._finalize(self._current, close_timeout=_CLOSE_WAIT, shutting_down=True)
        await self._records.close()

    # -- config ---------------------------------------------------------------------------------

    @property
    def config(self) -> AcquisitionConfig:
        """The config the next acquisition starts from."""
        return self._config

    async def update_config(self, changes: dict[str, Any]) -> AcquisitionConfig:
        """Merge ``changes`` into the current config; the file template must stay in the data dir.

        Raises
        ------
        ConfigError, PathError
            Nothing is changed.
        """
        config = merge_config(self._config, changes)
        relative = render_template(config.file_template, acq_id="check", when=datetime.now(UTC))
        await asyncio.to_thread(
            resolve_in_data_dir,
            self.data_dir,
            relative,
            create_parents=False,
            reserved=self._state_dir,
        )
        self._config = config
        return config

    # -- acquisitions ---------------------------------------------------------------------------

    @property
    def current(self) -> AcquisitionLike | None:
        """The acquisition being recorded (or just finished and not yet filed), if any."""
        return self._current

    async def arm(self, overrides: dict[str, Any] | None = None) -> AcquisitionInfo:
        """Start one acquisition with the current config plus ``overrides``.

        Raises
        ------
        BusyError
            An acquisition is running.
        ConfigError, PathError
            The overrides or the file name are invalid.
        DetectorError
            The detector refused (active mode).
        """
        async with self._arm_lock:
            await self._await_filing()
            if self._current is not None:
                raise BusyError(
                    f"acquisition {self._current_id} is running; stop or abort it first"
                )
            config = merge_config(self._config, overrides or {})
            config.resolved_stream_endpoint()  # ConfigError if there is no stream at all
            now = datetime.now(UTC)
            acq_id = f"{now:%Y%m%d-%H%M%S}-{next(self._seq):04d}"
            relative = render_template(config.file_template, acq_id=acq_id, when=now)
            # refuses <name> and <name>.partial if either exists as anything (dangling links too)
            file_path = await asyncio.to_thread(
                resolve_in_data_dir,
                self.data_dir,
                relative,
                new_file=True,
                reserved=self._state_dir,
            )
            self._records.track(acq_id)
            try:
                acq = await asyncio.to_thread(self._build, config, file_path, acq_id)
            except BaseException:
                self._records.forget(acq_id)
                raise
            # from here the slot is taken: every way out either starts the watcher or hands the
            # acquisition to a clean-up task (set as the watcher) that always frees the slot
            self._current, self._current_id = acq, acq_id
            start: asyncio.Future[None] | None = None
            try:
                await asyncio.to_thread(self._records.history.save, acq.info())
                start = asyncio.get_running_loop().run_in_executor(None, acq.start)
                # shielded: if this request is cancelled, the clean-up task still learns when
                # (and how) the start call in its thread ends
                await asyncio.shield(start)
            except Exception as exc:
                logger.error("acquisition %s could not start: %s", acq_id, exc)
                cleanup = self._start_cleanup(acq, acq_id, f"start failed: {exc}", None)
                await asyncio.shield(cleanup)  # the FAILED record is filed before we answer
                raise _as_stemdaq_error(exc) from exc
            except BaseException:  # cancelled (client gone, shutdown) or interrupted mid-start
                logger.warning("acquisition %s: %s", acq_id, _CANCELLED_ARM)
                self._start_cleanup(acq, acq_id, _CANCELLED_ARM, start)
                raise
            self._watcher = asyncio.create_task(self._watch(acq), name=f"stemdaq-watch-{acq_id}")
            info = acq.info()
            logger.info("armed acquisition %s -> %s", acq_id, info.file_path)
            return info

    async def _await_filing(self) -> None:
        """If the current acquisition already reported its final state, wait (bounded) until
        it is filed and its slot free: a client that saw "completed" may arm the next one at
        once, and must not get 409 for the moment filing takes."""
        acq, watcher = self._current, self._watcher
        if acq is None or watcher is None or not acq.state.is_final:
            return
        try:
            await asyncio.wait_for(asyncio.shield(watcher), timeout=FILING_WAIT)
        except TimeoutError:
            logger.warning(
                "acquisition %s: still being filed after %g s", self._current_id, FILING_WAIT
            )
        except Exception:  # the watcher's own error is logged where it happens
            logger.debug("watcher ended with an error", exc_info=True)

    def _build(self, config: AcquisitionConfig, file_path: Path, acq_id: str) -> AcquisitionLike:
        factory = self._factory or _default_factory()
        try:
            return factory(
                config,
                file_path,
                acq_id=acq_id,
                queue_size=self.settings.queue_size,
                compress_workers=self.settings.compress_workers,
                on_change=self._records.on_change,
            )
        except Exception as exc:
            raise _as_stemdaq_error(exc) from exc

    def _start_cleanup(
        self,
        acq: AcquisitionLike,
        acq_id: str,
        error: str,
        start: asyncio.Future[None] | None,
    ) -> asyncio.Task[None]:
        """Run :meth:`_fail_start` as the slot's watcher task (survives cancelling the arm)."""
        # from now on the engine's own snapshots (e.g. a late "aborted") are ignored
        self._records.forget(acq_id)
        task = asyncio.create_task(
            self._fail_start(acq, acq_id, error, start), name=f"stemdaq-fail-{acq_id}"
        )
        self._watcher = task
        return task

    async def _fail_start(
        self,
        acq: AcquisitionLike,
        acq_id: str,
        error: str,
        start: asyncio.Future[None] | None,
    ) -> None:
        """File the acquisition as FAILED with ``error``, release the engine, free the slot."""
        try:
            if start is not None:  # a cancelled arm: let the start call in its thread return
                try:
                    await start
                except Exception as exc:
                    error = f"{error}; start failed: {exc}"
            await asyncio.to_thread(acq.abort)
            finished = await asyncio.to_thread(acq.wait, _FAIL_WAIT)
            if not finished:
                logger.warning(
                    "acquisition %s: threads still running %.0f s after a failed start; "
                    "closing it in the background",
                    acq_id,
                    _FAIL_WAIT,
                )
            # close() waits for the threads: in its own thread, so the pool and threads are
            # released whenever they end, without holding up the loop or the slot
            await self._close_engine(acq_id, acq, _CLOSE_WAIT if finished else 0.0)
            info = acq.info()
            info = info.model_copy(
                update={
                    "state": AcquisitionState.FAILED,
                    "error": error,
                    "finished_at": info.finished_at
                    or datetime.now(UTC).isoformat(timespec="milliseconds"),
                }
            )
            await asyncio.to_thread(self._records.history.save, info, replace_final=True)
            self._records.publish(Event("state", info))
        except Exception:
            logger.exception("acquisition %s: clean-up after a failed start failed", acq_id)
        finally:
            if self._current is acq:
                self._current, self._current_id = None, None

    def get(self, acq_id: str) -> AcquisitionInfo:
        """Live info for the running acquisition, the stored record otherwise."""
        if self._current is not None and acq_id == self._current_id:
            return self._current.info()
        info = self._records.history.get(acq_id)
        if info is None:
            raise NotFoundError(f"no acquisition {acq_id!r}")
        return info

    def list(
        self, offset: int = 0, limit: int = 50, state: AcquisitionState | None = None
    ) -> tuple[list[AcquisitionInfo], int]:
        """A page of acquisitions (only those in ``state``, if given), newest first, and the
        total count of matching ones."""
        ids = self._records.history.ids()
        if state is None:
            return [self.get(i) for i in ids[offset : offset + limit]], len(ids)
        matching = [info for info in map(self.get, ids) if info.state is state]
        return matching[offset : offset + limit], len(matching)

    def latest(self) -> AcquisitionInfo | None:
        """The running acquisition, else the most recent one."""
        if self._current is not None and self._current_id is not None:
            return self._current.info()
        ids = self._records.history.ids()
        return self._records.history.get(ids[0]) if ids else None

    def stop(self, acq_id: str) -> AcquisitionInfo:
        """Ask the acquisition to finish on end-of-series (or timeout). Idempotent."""
        info = self.get(acq_id)
        if self._current is not None and acq_id == self._current_id and not info.state.is_final:
            call_in_thread(self._current.stop, f"stop {acq_id}")
        return info

    def abort(self, acq_id: str) -> AcquisitionInfo:
        """Ask the acquisition to close now; gaps stay marked. Idempotent.

        The engine's ``abort()`` runs in a worker thread, never on the event loop.
        """
        info = self.get(acq_id)
        if self._current is not None and acq_id == self._current_id and not info.state.is_final:
            call_in_thread(self._current.abort, f"abort {acq_id}")
        return info

    # -- events ---------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event | None]:
        """A queue of every state change and progress event from now on; ``None`` at shutdown."""
        return self._records.subscribe()

    def unsubscribe(self, q: asyncio.Queue[Event | None]) -> None:
        """Stop delivering to ``q``."""
        self._records.unsubscribe(q)

    def end_streams(self) -> None:
        """End every event stream now (thread- and signal-safe): the server is going down."""
        self._records.end_streams()

    async def _close_engine(self, acq_id: str, acq: AcquisitionLike, timeout: float | None) -> bool:
        """``acq.close()`` in its own thread; True if it finished within ``timeout`` s."""
        return await self._closers.close(acq_id, acq.close, timeout)

    async def _watch(self, acq: AcquisitionLike) -> None:
        while not await asyncio.to_thread(acq.wait, _WATCH_PERIOD):
            pass
        await self._finalize(acq)

    async def _finalize(
        self,
        acq: AcquisitionLike,
        *,
        close_timeout: float | None = None,
        shutting_down: bool = False,
    ) -> None:
        """File the finished acquisition: history, lifetime totals, free the slot (always)."""
        if self._current is not acq:
            return
        acq_id = self._current_id or acq.info().id
        try:
            if not await self._close_engine(acq_id, acq, close_timeout):
                logger.error(
                    "acquisition %s: engine did not close within %s s; left to its threads",
                    acq_id,
                    close_timeout,
                )
            info = acq.info()
            if shutting_down and not info.state.is_final:
                info = info.model_copy(
                    update={
                        "state": AcquisitionState.FAILED,
                        "error": info.error or "service shut down before the acquisition ended",
                        "finished_at": info.finished_at
                        or datetime.now(UTC).isoformat(timespec="milliseconds"),
                    }
                )
            # refused if the manager filed it FAILED already (a failed start)
            await asyncio.to_thread(self._records.history.save, info)
            self.totals.add(info.counters, acq.latency_histogram())
            previous = self._records.forget(info.id)
            if previous is not None and previous != info.state:
                self._records.publish(Event("state", info))
            logger.info("acquisition %s %s", info.id, info.state.value)
        finally:
            if self._current is acq:
                self._current, self._current_id = None, None


def _as_stemdaq_error(exc: BaseException) -> StemdaqError:
    """Errors from building/starting an acquisition, as API-mappable errors (never a 500)."""
    if isinstance(exc, StemdaqError):
        return exc
    if isinstance(exc, OSError):
        return PathError(f"cannot create the file: {exc}")
    return ConfigError(f"cannot start the acquisition: {type(exc).__name__}: {exc}")
