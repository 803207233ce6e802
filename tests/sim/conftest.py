"""Fixtures for the simulator tests: simulators on free ports, PULL sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sim_wire import Puller
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
