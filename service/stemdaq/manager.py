"""The service's control plane: current config, at most one running acquisition, history, events.

:class:`AcquisitionManager` lives on the event loop. Everything that blocks (SIMPLON calls, file
creation, thread joins, history writes) runs in worker threads; the engine reports back through
``on_change`` from its own threads, bridged onto the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from stemdaq.config import AcquisitionConfig, Settings, format_validation_error
from stemdaq.errors import BusyError, ConfigError, NotFoundError, PathError, StemdaqError
from stemdaq.history import HistoryStore
from stemdaq.models import AcquisitionInfo, AcquisitionState, Counters
from stemdaq.paths import check_template, render_template, resolve_in_data_dir

logger = logging.getLogger(__name__)

_SUBSCRIBER_QUEUE = 256  # events buffered per SSE client; the oldest go first when full
_WATCH_PERIOD = 0.1  # seconds between checks for the end of the running acquisition


class AcquisitionLike(Protocol):
    """What the manager needs from one acquisition (``stemdaq.acquisition.Acquisition``)."""

    @property
    def state(self) -> AcquisitionState: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def abort(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...
    def info(self) -> AcquisitionInfo: ...
    def latency_histogram(self) -> tuple[list[float], list[int], float]: ...


AcquisitionFactory = Callable[..., AcquisitionLike]


@dataclass(slots=True)
class Event:
    """One item of the event stream: ``state`` (a state change) or ``progress``."""

    kind: str
    info: AcquisitionInfo


@dataclass
class Totals:
    """Service-lifetime sums over finished acquisitions, for the Prometheus counters."""

    frames_received: int = 0
    frames_written: int = 0
    bytes_written: int = 0
    dropped: dict[str, int] | None = None
    latency_counts: list[int] | None = None
    latency_sum: float = 0.0

    def add(self, counters: Counters, histogram: tuple[list[float], list[int], float]) -> None:
        """Fold one finished acquisition in."""
        self.frames_received += counters.frames_received
        self.frames_written += counters.frames_written
        self.bytes_written += counters.bytes_written
        dropped = self.dropped or {}
        for reason, n in counters.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        self.dropped = dropped
        _, counts, total = histogram
        if self.latency_counts is None or len(self.latency_counts) != len(counts):
            self.latency_counts = [0] * len(counts)
        self.latency_counts = [a + b for a, b in zip(self.latency_counts, counts, strict=True)]
        self.latency_sum += total


def merge_config(base: AcquisitionConfig, changes: dict[str, Any]) -> AcquisitionConfig:
    """``base`` with ``changes`` merged in (nested dicts merge key by key), validated again.

    Raises
    ------
    ConfigError
        With one readable line per invalid field.
    """
    merged = _deep_merge(base.model_dump(), changes)
    try:
        config = AcquisitionConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc).replace("invalid settings", "invalid config")
        ) from None
    check_template(config.file_template)
    return config


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


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
        self._history = HistoryStore(settings.resolved_state_dir)
        self._current: AcquisitionLike | None = None
        self._current_id: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._arm_lock = asyncio.Lock()
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._last_state: dict[str, AcquisitionState] = {}
        self._seq = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.totals = Totals()

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the history (marking interrupted acquisitions failed)."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        records = await asyncio.to_thread(self._history.load)
        last = max(
            (int(r.id.rsplit("-", 1)[-1]) for r in records if r.id.rsplit("-", 1)[-1].isdigit()),
            default=0,
        )
        self._seq = itertools.count(last + 1)
        logger.info("history: %d acquisitions in %s", len(records), self._history.directory)

    async def close(self, timeout: float = 30.0) -> None:
        """Abort a running acquisition, wait for its file to close, end every event stream."""
        acq = self._current
        if acq is not None and not acq.state.is_final:
            logger.warning("shutting down: aborting acquisition %s", self._current_id)
            acq.abort()
            await asyncio.to_thread(acq.wait, timeout)
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._current is not None:  # the watcher did not get there (timeout)
            await self._finalize(self._current)
        for q in list(self._subscribers):
            _put_dropping_oldest(q, None)

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
        await asyncio.to_thread(resolve_in_data_dir, self.data_dir, relative, create_parents=False)
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
            if self._current is not None:
                raise BusyError(
                    f"acquisition {self._current_id} is running; stop or abort it first"
                )
            config = merge_config(self._config, overrides or {})
            config.resolved_stream_endpoint()  # ConfigError if there is no stream at all
            now = datetime.now(UTC)
            acq_id = f"{now:%Y%m%d-%H%M%S}-{next(self._seq):04d}"
            relative = render_template(config.file_template, acq_id=acq_id, when=now)
            file_path = await asyncio.to_thread(resolve_in_data_dir, self.data_dir, relative)
            if await asyncio.to_thread(_exists, file_path):
                raise PathError(f"{relative!r} exists already in the data directory")
            acq = await asyncio.to_thread(self._build, config, file_path, acq_id)
            self._current, self._current_id = acq, acq_id
            self._last_state[acq_id] = acq.state
            await asyncio.to_thread(self._history.save, acq.info())
            try:
                await asyncio.to_thread(acq.start)
            except Exception as exc:
                await self._fail_start(acq, exc)
                raise _as_stemdaq_error(exc) from exc
            self._watcher = asyncio.create_task(self._watch(acq), name=f"stemdaq-watch-{acq_id}")
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
                on_change=self._on_change,
            )
        except Exception as exc:
            raise _as_stemdaq_error(exc) from exc

    async def _fail_start(self, acq: AcquisitionLike, exc: BaseException) -> None:
        logger.error("acquisition %s could not start: %s", self._current_id, exc)
        acq.abort()
        # close() waits for the threads: only call it if they ran and have finished
        if await asyncio.to_thread(acq.wait, 2.0):
            await asyncio.to_thread(acq.close)
        info = acq.info().model_copy(
            update={"state": AcquisitionState.FAILED, "error": f"start failed: {exc}"}
        )
        await asyncio.to_thread(self._history.save, info)
        self._publish(Event("state", info))
        self._current, self._current_id = None, None

    def get(self, acq_id: str) -> AcquisitionInfo:
        """Live info for the running acquisition, the stored record otherwise."""
        if self._current is not None and acq_id == self._current_id:
            return self._current.info()
        info = self._history.get(acq_id)
        if info is None:
            raise NotFoundError(f"no acquisition {acq_id!r}")
        return info

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[AcquisitionInfo], int]:
        """A page of acquisitions, newest first, and the total count."""
        ids = self._history.ids()
        return [self.get(i) for i in ids[offset : offset + limit]], len(ids)

    def latest(self) -> AcquisitionInfo | None:
        """The running acquisition, else the most recent one."""
        if self._current is not None and self._current_id is not None:
            return self._current.info()
        ids = self._history.ids()
        return self._history.get(ids[0]) if ids else None

    def stop(self, acq_id: str) -> AcquisitionInfo:
        """Ask the acquisition to finish on end-of-series (or timeout). Idempotent."""
        info = self.get(acq_id)
        if self._current is not None and acq_id == self._current_id and not info.state.is_final:
            self._current.stop()
        return info

    def abort(self, acq_id: str) -> AcquisitionInfo:
        """Ask the acquisition to close now; gaps stay marked. Idempotent."""
        info = self.get(acq_id)
        if self._current is not None and acq_id == self._current_id and not info.state.is_final:
            self._current.abort()
        return info

    # -- events ---------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event | None]:
        """A queue of every state change and progress event from now on; ``None`` at shutdown."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=_SUBSCRIBER_QUEUE)
        self._subscribers.add(q)
        return q

    def end_streams(self) -> None:
        """End every event stream now (thread- and signal-safe): the server is going down."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for q in list(self._subscribers):
            loop.call_soon_threadsafe(_put_dropping_oldest, q, None)

    def unsubscribe(self, q: asyncio.Queue[Event | None]) -> None:
        """Stop delivering to ``q``."""
        self._subscribers.discard(q)

    def _on_change(self, info: AcquisitionInfo) -> None:
        """Engine callback (any thread): persist state changes, hand the event to the loop."""
        previous = self._last_state.get(info.id)
        if previous != info.state:
            self._last_state[info.id] = info.state
            self._history.save(info)  # a few small writes per acquisition, on the engine's thread
            kind = "state"
        else:
            kind = "progress"
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._publish, Event(kind, info))
        except RuntimeError:  # loop closed between the check and the call
            pass

    def _publish(self, event: Event) -> None:
        for q in list(self._subscribers):
            _put_dropping_oldest(q, event)

    async def _watch(self, acq: AcquisitionLike) -> None:
        while not acq.wait(0):
            await asyncio.sleep(_WATCH_PERIOD)
        await self._finalize(acq)

    async def _finalize(self, acq: AcquisitionLike) -> None:
        """File the finished acquisition: history, lifetime totals, free the slot."""
        if self._current is not acq:
            return
        await asyncio.to_thread(acq.close)
        info = acq.info()
        await asyncio.to_thread(self._history.save, info)
        self.totals.add(info.counters, acq.latency_histogram())
        if self._last_state.get(info.id) != info.state:
            self._last_state[info.id] = info.state
            self._publish(Event("state", info))
        self._last_state.pop(info.id, None)
        self._current, self._current_id = None, None
        logger.info("acquisition %s %s", info.id, info.state.value)


def _exists(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".partial").exists()


def _put_dropping_oldest(q: asyncio.Queue[Event | None], item: Event | None) -> None:
    while True:
        try:
            q.put_nowait(item)
            return
        except asyncio.QueueFull:
            try:
                q.get_nowait()
            except asyncio.QueueEmpty:  # pragma: no cover - single consumer
                pass


def _as_stemdaq_error(exc: BaseException) -> StemdaqError:
    """Errors from building/starting an acquisition, as API-mappable errors (never a 500)."""
    if isinstance(exc, StemdaqError):
        return exc
    if isinstance(exc, OSError):
        return PathError(f"cannot create the file: {exc}")
    return ConfigError(f"cannot start the acquisition: {type(exc).__name__}: {exc}")
