"""What the service remembers and tells: the history of acquisitions, their states in order, the
events that SSE and the long-poll wait on, lifetime totals.

:class:`Records` is the manager's second job, split out of it: the manager decides (arm, stop,
abort, one acquisition at a time), the records keep and publish. The engine's ``on_change``
callback comes here from any thread; a snapshot whose state is earlier in the life cycle than
the last one seen, a second, different final state, or one for an acquisition already filed is
dropped, so history and events never go backwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from stemdaq.eventbus import Event, EventBus, Totals
from stemdaq.history import HistoryStore
from stemdaq.models import AcquisitionInfo, AcquisitionState

logger = logging.getLogger(__name__)

_HISTORY_RETRY = 5.0  # seconds between tries to write history records a full disk refused

# life-cycle order: a snapshot earlier than the last one seen for an acquisition is stale
_ORDER = {
    AcquisitionState.ARMED: 0,
    AcquisitionState.ACQUIRING: 1,
    AcquisitionState.FINISHING: 2,
    AcquisitionState.COMPLETED: 3,
    AcquisitionState.COMPLETED_WITH_GAPS: 3,
    AcquisitionState.ABORTED: 3,
    AcquisitionState.FAILED: 3,
}


class Records:
    """History (one file per acquisition in ``state_dir``), state order, events, totals."""

    def __init__(self, state_dir: Path) -> None:
        self.history = HistoryStore(state_dir)
        self.events = EventBus()
        self.totals = Totals()
        # last state seen per live acquisition; guarded by _lock (engine threads + loop). No
        # entry: unknown, already filed, or failed by the manager -> engine snapshots ignored.
        self._last_state: dict[str, AcquisitionState] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retrier: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Load the history (interrupted acquisitions marked failed); the highest sequence
        number used so far."""
        self._loop = asyncio.get_running_loop()
        self.events.attach(self._loop)
        records = await asyncio.to_thread(self.history.load)
        logger.info("history: %d acquisitions in %s", len(records), self.history.directory)
        self._retrier = asyncio.create_task(self._retry_history(), name="stemdaq-history-retry")
        return max(
            (int(r.id.rsplit("-", 1)[-1]) for r in records if r.id.rsplit("-", 1)[-1].isdigit()),
            default=0,
        )

    async def _retry_history(self) -> None:
        """History records that could not be written (disk full) are written when they can."""
        while True:
            await asyncio.sleep(_HISTORY_RETRY)
            if self.history.pending:
                written = await asyncio.to_thread(self.history.retry_pending)
                if written:
                    logger.info("history: %d pending records written", written)

    async def close(self) -> None:
        """Stop retrying (one last try for pending records), end every event stream."""
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
        if self.history.pending:
            await asyncio.to_thread(self.history.retry_pending)
        self.events.close()

    # -- states ---------------------------------------------------------------------------------

    def track(self, acq_id: str) -> None:
        """Follow a new acquisition's snapshots from ``armed`` on."""
        with self._lock:
            self._last_state[acq_id] = AcquisitionState.ARMED

    def forget(self, acq_id: str) -> AcquisitionState | None:
        """Ignore the acquisition's snapshots from now on; the last state seen."""
        with self._lock:
            return self._last_state.pop(acq_id, None)

    def on_change(self, info: AcquisitionInfo) -> None:
        """Engine callback (any thread): persist state changes, hand the event to the loop."""
        with self._lock:
            previous = self._last_state.get(info.id)
            if previous is None:
                return
            if _ORDER[info.state] < _ORDER[previous] or (
                previous.is_final and info.state != previous
            ):
                return
            if previous != info.state:
                self._last_state[info.id] = info.state
                self.history.save(info)  # a few small writes per acquisition, engine's thread
                kind = "state"
            else:
                kind = "progress"
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            try:  # under the lock: events reach the loop in the order they were accepted
                loop.call_soon_threadsafe(self.publish, Event(kind, info))
            except RuntimeError:  # loop closed between the check and the call
                pass

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber (on the loop)."""
        self.events.publish(event)

    # -- events ---------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event | None]:
        """A queue of every state change and progress event from now on; ``None`` at shutdown."""
        return self.events.subscribe()

    def unsubscribe(self, q: asyncio.Queue[Event | None]) -> None:
        """Stop delivering to ``q``."""
        self.events.unsubscribe(q)

    def end_streams(self) -> None:
        """End every event stream now (thread- and signal-safe): the server is going down."""
        self.events.end_streams()
