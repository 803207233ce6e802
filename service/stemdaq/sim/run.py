"""``run_sim``: run the simulated detector until Ctrl-C / SIGTERM (behind ``stemdaq sim``)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from stemdaq.sim.detector import SimulatedDetector
from stemdaq.sim.faults import Faults

logger = logging.getLogger(__name__)


def run_sim(
    rest_port: int = 8080,
    stream_port: int = 31001,
    fmt: str | None = None,
    frame_shape: tuple[int, int] = (96, 96),
    dtype: str = "uint16",
    compression: str = "bslz4",
    seed: int = 0,
    faults: Faults | str | None = None,
    frame_time: float | None = None,
    host: str = "127.0.0.1",
    on_ready: Callable[[SimulatedDetector], Any] | None = None,
    stop_event: threading.Event | None = None,
    **kwargs: Any,
) -> None:
    """Start a :class:`SimulatedDetector` and block until Ctrl-C, SIGTERM or ``stop_event``.

    ``on_ready(det)`` is called once both ports are bound and the REST server listens
    (``det.rest_port``, ``det.stream_port``, ``det.rest_url``, ``det.stream_endpoint``).
    Extra keyword arguments go to :class:`SimulatedDetector` (``scan_shape``, ``channels``,
    ``header_detail``, ``split_header``, ``stream_host``, ``simplon_version``,
    ``version_endpoint``); ``fmt`` None: ``cbor``, or ``json`` for SIMPLON 1.6. Errors of the
    background threads are re-raised when it returns.
    """
    stop = stop_event or threading.Event()
    det = SimulatedDetector(
        rest_host=host,
        rest_port=rest_port,
        stream_port=stream_port,
        fmt=fmt,
        frame_shape=frame_shape,
        dtype=dtype,
        compression=compression,
        seed=seed,
        faults=faults,
        frame_time=frame_time,
        **kwargs,
    )
    previous = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        det.start()  # a taken port raises BindError here, before on_ready
        det.wait_for_listen(10)
        logger.info(
            "stemdaq sim: SIMPLON %s %s%s, stream %s (%s), faults: %s",
            det.simplon_version,
            det.rest_url,
            "" if det.version_endpoint else " (no version endpoint)",
            det.stream_endpoint,
            det.stream_format,
            det.faults or "none",
        )
        if on_ready is not None:
            on_ready(det)
        while not stop.wait(0.2):
            if det.errors:
                break
    except KeyboardInterrupt:
        pass
    finally:
        det.stop()
        if in_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    det.maybe_raise()
