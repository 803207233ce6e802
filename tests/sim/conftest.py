"""Fixtures for the simulator tests: simulators on free ports, PULL sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from sim_wire import decode_v2
from stemdaq.sim import SimulatedDetector


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatedDetector]]:
    """Start simulated detectors on free ports; their thread errors fail the test."""
    started: list[SimulatedDetector] = []

    def _make(**kwargs: Any) -> SimulatedDetector:
        det = SimulatedDetector(rest_port=0, stream_port=0, **kwargs)
        det.start()
        started.append(det)
        det.wait_for_listen(10)
        return det

    yield _make
    for det in started:
        det.stop()
    for det in started:
        det.maybe_raise()


class Puller:
    """A PULL socket connected to a simulator's stream."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def recv(self, timeout: float = 5.0) -> list[bytes] | None:
        """One message, or None after ``timeout`` seconds."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return self.sock.recv_multipart()

    def until_end(self, timeout: float = 10.0, v2: bool = True) -> list[list[bytes]]:
        """Messages up to and including the end message (or until silent for ``timeout``)."""
        out = []
        while (msg := self.recv(timeout)) is not None:
            out.append(msg)
            if v2 and _is_v2_end(msg[0]):
                break
            if not v2 and b"dseries_end-1.0" in msg[0][:40]:
                break
        return out

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def _is_v2_end(message: bytes) -> bool:
    try:
        return decode_v2(message)["type"] == "end"
    except Exception:  # noqa: BLE001 - a corrupt frame on purpose
        return False


@pytest.fixture
def pull() -> Iterator[Callable[[str], Puller]]:
    """Connect PULL sockets; closed at teardown."""
    made: list[Puller] = []

    def _make(endpoint: str) -> Puller:
        p = Puller(endpoint)
        made.append(p)
        return p

    yield _make
    for p in made:
        p.close()
