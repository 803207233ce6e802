"""Events of the service (state changes, progress) to every SSE client; lifetime totals.

The engine reports from its own threads; :class:`EventBus` hands each event to every
subscriber's bounded queue on the loop, dropping the oldest for a slow client (a slow browser
never slows acquisition). :class:`Totals` sums finished acquisitions for Prometheus.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from stemdaq.models import AcquisitionInfo, Counters

_SUBSCRIBER_QUEUE = 256  # events buffered per SSE client; the oldest go first when full


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


class EventBus:
    """Subscribers' queues on one event loop."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the subscribers live on (for :meth:`end_streams` from other threads)."""
        self._loop = loop

    def subscribe(self) -> asyncio.Queue[Event | None]:
        """A queue of every event from now on; ``None`` at shutdown."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=_SUBSCRIBER_QUEUE)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event | None]) -> None:
        """Stop delivering to ``q``."""
        self._subscribers.discard(q)

    def publish(self, event: Event) -> None:
        """Give ``event`` to every subscriber (on the loop)."""
        for q in list(self._subscribers):
            put_dropping_oldest(q, event)

    def close(self) -> None:
        """End every stream (on the loop)."""
        for q in list(self._subscribers):
            put_dropping_oldest(q, None)

    def end_streams(self) -> None:
        """End every stream now, from any thread or a signal handler."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for q in list(self._subscribers):
            loop.call_soon_threadsafe(put_dropping_oldest, q, None)


def put_dropping_oldest(q: asyncio.Queue[Event | None], item: Event | None) -> None:
    while True:
        try:
            q.put_nowait(item)
            return
        except asyncio.QueueFull:
            try:
                q.get_nowait()
            except asyncio.QueueEmpty:  # pragma: no cover - single consumer
                pass
