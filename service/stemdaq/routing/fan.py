"""The fan: PULL the detector's stream, PUSH each image to the rank that owns it.

One routing thread per series::

    detector PUSH -> PULL (zero-copy) -> image id from the header (routing/headers.py)
        image:      -> PUSH to rank (image_id // (n_k * block_rows)) % N, the bytes unchanged
        other:      -> PUSH to every rank (start, end, anything not recognised)

Each rank has its own PUSH socket (one peer each), so ZeroMQ's round-robin never decides who
gets a frame, and the order of one rank's messages is the detector's order. A rank that stops
taking frames for ``send_timeout`` s (killed, hung) is marked lost: its frames are dropped and
counted, the other ranks go on (back-pressure from a slow rank stalls the fan, and with it the
detector, until then). The thread ends after forwarding the end message, or on abort.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import zmq
from stemdaq.receiver.zmq_source import with_rest
from stemdaq.routing.headers import (
    NOT_IMAGE,
    is_end,
    is_start,
    series_id,
    v1_image_id,
    v2_image_id,
)
from stemdaq.threadnames import named

logger = logging.getLogger(__name__)

_POLL_MS = 50


@dataclass
class FanCounters:
    """What the fan did in the current (or last) series."""

    state: str = "idle"  # idle | routing | completed | aborted | failed
    started: bool = False  # a series start was forwarded
    expected_series: int | None = None  # active mode: the detector's series id
    messages: int = 0
    frames: list[int] = field(default_factory=list)  # per rank
    dropped: list[int] = field(default_factory=list)  # frames per rank (the rank was lost)
    broadcast: int = 0
    lost: list[int] = field(default_factory=list)  # ranks marked lost
    cpu_seconds: float = 0.0  # the routing thread's CPU (thread_time)
    error: str | None = None


class Fan:
    """The sockets to the ranks (bound once) and the routing thread of the current series.

    Parameters
    ----------
    ranks
        Number of ranks; rank ``i`` connects its PULL to ``tcp://<host>:<port + i>``.
    bind, port
        Where the PUSH sockets listen.
    send_timeout
        Seconds a rank may refuse frames before it is counted lost.
    """

    def __init__(
        self,
        ranks: int,
        *,
        bind: str = "127.0.0.1",
        port: int = 31100,
        send_timeout: float = 5.0,
        sndhwm: int = 1000,
    ) -> None:
        self.ranks = ranks
        self.send_timeout = send_timeout
        self._ctx = zmq.Context()
        self._socks: list[zmq.Socket] = []
        for i in range(ranks):
            s = self._ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.SNDHWM, sndhwm)
            s.setsockopt(zmq.LINGER, 0)
            s.bind(f"tcp://{bind}:{port + i}")
            self._socks.append(s)
        self.counters = FanCounters(frames=[0] * ranks, dropped=[0] * ranks)
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    @property
    def busy(self) -> bool:
        """True while a series is being routed."""
        return self._thread is not None and self._thread.is_alive()

    def arm(self, endpoint: str, *, n_k: int, block_rows: int, rcvhwm: int = 1000) -> None:
        """Connect to the detector's ``endpoint`` and route one series in a thread."""
        if self.busy:
            raise RuntimeError("the fan is routing a series already")
        self._abort.clear()
        self.counters = FanCounters(
            state="routing", frames=[0] * self.ranks, dropped=[0] * self.ranks
        )
        pull = self._ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, rcvhwm)
        pull.setsockopt(zmq.LINGER, 0)
        pull.connect(endpoint)
        self._thread = named(self._run, args=(pull, n_k * block_rows), name="stemdaq-fan")
        self._thread.start()

    def abort(self) -> None:
        """Stop routing now (what is queued stays unsent)."""
        self._abort.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the routing thread; True if it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.busy

    def close(self) -> None:
        """Abort, wait, close every socket."""
        self.abort()
        self.wait(5)
        for s in self._socks:
            s.close(0)
        self._ctx.term()

    # -- the routing thread -----------------------------------------------------------------

    def _run(self, pull: zmq.Socket, per_block: int) -> None:
        c = self.counters
        self._t0 = t0 = time.thread_time()
        try:
            c.state = self._route(pull, per_block)
        except Exception as exc:  # stored for the control side
            logger.exception("fan: routing failed")
            c.state, c.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            c.cpu_seconds = time.thread_time() - t0
            pull.close(0)
        logger.info(
            "fan: %s, %d frames %s, %d to all ranks",
            c.state,
            sum(c.frames),
            c.frames,
            c.broadcast,
        )

    def _route(self, pull: zmq.Socket, per_block: int) -> str:
        c = self.counters
        n = self.ranks
        frames = c.frames
        recv, aborted = pull.recv, self._abort.is_set
        while True:
            if aborted():
                return "aborted"
            if not pull.poll(_POLL_MS):
                c.cpu_seconds = time.thread_time() - self._t0
                continue
            while True:  # drain without a poll per message
                try:
                    part = recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                c.messages += 1
                if part.more:  # stream v1: the other parts arrive with it
                    parts = with_rest(recv, part, zmq.NOBLOCK)
                    image_id = v1_image_id(part.buffer)
                else:
                    parts = None
                    image_id = v2_image_id(part.buffer)
                if image_id != NOT_IMAGE:
                    rank = (image_id // per_block) % n
                    if self._send(rank, part, parts):
                        frames[rank] += 1
                    else:
                        c.dropped[rank] += 1
                    continue
                c.broadcast += 1
                for rank in range(n):
                    self._send(rank, part, parts)
                if is_start(part.buffer):
                    c.started = True
                elif c.started and is_end(part.buffer) and self._ends_ours(part.buffer):
                    return "completed"  # an end before any start is stale (an aborted
                    # series' late end), and so is another series' once the id is known
                if aborted():
                    return "aborted"

    def expect_series(self, series: int) -> None:
        """Active mode: routing ends only at the end of series ``series`` (the detector's)."""
        self.counters.expected_series = series

    def _ends_ours(self, message: memoryview) -> bool:
        expected = self.counters.expected_series
        return expected is None or series_id(message) in (expected, None)

    def _send(self, rank: int, part: zmq.Frame, parts: list[zmq.Frame] | None) -> bool:
        """Send to ``rank``; False if it is lost or stays full for ``send_timeout``."""
        c = self.counters
        if rank in c.lost:
            return False
        sock = self._socks[rank]
        deadline = 0.0
        while True:
            try:
                if parts is None:
                    sock.send(part, zmq.NOBLOCK, copy=False)
                else:
                    sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                now = time.monotonic()
                deadline = deadline or now + self.send_timeout
                if now > deadline or self._abort.is_set():
                    break
                sock.poll(_POLL_MS, zmq.POLLOUT)
        if not self._abort.is_set():
            c.lost.append(rank)
            logger.error(
                "fan: rank %d took no frame for %g s: counted lost, its frames are dropped",
                rank,
                self.send_timeout,
            )
        return False
