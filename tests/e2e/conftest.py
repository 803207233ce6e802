"""End-to-end fixtures: the real simulator on loopback, real files on disk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from stemdaq.sim import SimulatedDetector


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Any]]:
    """Start simulated detectors on free ports; errors in their threads fail the test."""
    started: list[SimulatedDetector] = []

    def _make(**kwargs: Any) -> SimulatedDetector:
        det = SimulatedDetector(rest_port=0, stream_port=0, **kwargs)
        det.start()
        det.wait_for_listen(10)
        started.append(det)
        return det

    yield _make
    for det in started:
        det.stop()
    for det in started:
        det.maybe_raise()


@contextmanager
def running(acq: Any) -> Iterator[Any]:
    """Start an Acquisition and always release it."""
    acq.start()
    try:
        yield acq
    finally:
        acq.close()
