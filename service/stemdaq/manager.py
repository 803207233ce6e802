"""The service's control plane: the current config, arming, stopping and looking up acquisitions.

:class:`AcquisitionManager` lives on the event loop. Everything that blocks (SIMPLON calls, file
creation, thread joins, history writes) runs in worker threads. The one running acquisition,
waiting for it to end and filing it, is :class:`stemdaq.slot.AcquisitionSlot`; what is remembered
and told (history, state order, events, totals) is :class:`stemdaq.records.Records`; the engine
reports to it through ``on_change`` from its own threads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stemdaq.config import AcquisitionConfig, merge_config
from stemdaq.errors import BusyError, ConfigError, NotFoundError, PathError, StemdaqError
from stemdaq.eventbus import Event, Totals
from stemdaq.models import AcquisitionInfo, AcquisitionState
from stemdaq.offloop import call_in_thread
from stemdaq.paths import render_template, resolve_in_data_dir
from stemdaq.records import Records
from stemdaq.settings import Settings
from stemdaq.slot import AcquisitionLike, AcquisitionSlot

logger = logging.getLogger(__name__)

_CANCELLED_ARM = "arm cancelled (the client went away or the service is shutting down)"

AcquisitionFactory = Callable[..., AcquisitionLike]

__all__ = ["AcquisitionManager", "Event", "Totals", "merge_config"]


def _default_factory() -> AcquisitionFactory:
    from stemdaq.acquisition import Acquisition

    return Acquisition


class AcquisitionManager:
    """Arms, stops and looks up acquisitions; one at a time (the slot follows and files it).

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
        self._slot = AcquisitionSlot(self._records)
        self._arm_lock = asyncio.Lock()
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
        await self._slot.close(timeout)
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
        return self._slot.current

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
            await self._slot.await_filing()
            if self._slot.current is not None:
                raise BusyError(
                    f"acquisition {self._slot.current_id} is running; stop or abort it first"
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
            self._slot.take(acq, acq_id)
            start: asyncio.Future[None] | None = None
            try:
                await asyncio.to_thread(self._records.history.save, acq.info())
                start = asyncio.get_running_loop().run_in_executor(None, acq.start)
                # shielded: if this request is cancelled, the clean-up task still learns when
                # (and how) the start call in its thread ends
                await asyncio.shield(start)
            except Exception as exc:
                logger.error("acquisition %s could not start: %s", acq_id, exc)
                cleanup = self._slot.fail_start(acq, acq_id, f"start failed: {exc}", None)
                await asyncio.shield(cleanup)  # the FAILED record is filed before we answer
                raise _as_stemdaq_error(exc) from exc
            except BaseException:  # cancelled (client gone, shutdown) or interrupted mid-start
                logger.warning("acquisition %s: %s", acq_id, _CANCELLED_ARM)
                self._slot.fail_start(acq, acq_id, _CANCELLED_ARM, start)
                raise
            self._slot.watch(acq, acq_id)
            info = acq.info()
            logger.info("armed acquisition %s -> %s", acq_id, info.file_path)
            return info

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

    def get(self, acq_id: str) -> AcquisitionInfo:
        """Live info for the running acquisition, the stored record otherwise."""
        current = self._slot.current
        if current is not None and acq_id == self._slot.current_id:
            return current.info()
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
        current = self._slot.current
        if current is not None and self._slot.current_id is not None:
            return current.info()
        ids = self._records.history.ids()
        return self._records.history.get(ids[0]) if ids else None

    def stop(self, acq_id: str) -> AcquisitionInfo:
        """Ask the acquisition to finish on end-of-series (or timeout). Idempotent."""
        info = self.get(acq_id)
        current = self._slot.current
        if current is not None and acq_id == self._slot.current_id and not info.state.is_final:
            call_in_thread(current.stop, f"stop {acq_id}")
        return info

    def abort(self, acq_id: str) -> AcquisitionInfo:
        """Ask the acquisition to close now; gaps stay marked. Idempotent.

        The engine's ``abort()`` runs in a worker thread, never on the event loop.
        """
        info = self.get(acq_id)
        current = self._slot.current
        if current is not None and acq_id == self._slot.current_id and not info.state.is_final:
            call_in_thread(current.abort, f"abort {acq_id}")
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


def _as_stemdaq_error(exc: BaseException) -> StemdaqError:
    """Errors from building/starting an acquisition, as API-mappable errors (never a 500)."""
    if isinstance(exc, StemdaqError):
        return exc
    if isinstance(exc, OSError):
        return PathError(f"cannot create the file: {exc}")
    return ConfigError(f"cannot start the acquisition: {type(exc).__name__}: {exc}")
