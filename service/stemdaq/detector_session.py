"""Active mode, one acquisition's use of the detector: configure, arm, wait for the start
message on the stream, trigger; disarm on stop; abort or disarm at the end.

The beam scans the sample only after ``trigger``, and :meth:`DetectorSession.arm_and_trigger`
triggers only once the detector's start message (with the sequence id ``arm`` returned) has
arrived on the stream endpoint: a wrong endpoint ends in a disarmed detector, not a scan nobody
records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from stemdaq.config import AcquisitionConfig
from stemdaq.detector import SimplonClient
from stemdaq.errors import StreamError
from stemdaq.rank import Signals

logger = logging.getLogger(__name__)


class DetectorSession:
    """The SIMPLON side of one acquisition (see the module docstring).

    Parameters
    ----------
    config
        ``detector_url``, ``simplon_version``, ``arm_timeout`` and the scan.
    name
        For thread names and log lines.
    """

    def __init__(self, config: AcquisitionConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.client = SimplonClient(
            config.detector_url or "", simplon_version=config.simplon_version
        )
        self.armed = False
        self.notes: list[str] = []  # what was negotiated, for the record
        self.warnings: list[str] = []  # commands that failed

    def arm_and_trigger(
        self, endpoint: str, signals: Signals, done: Callable[[], bool]
    ) -> threading.Thread | None:
        """Configure, arm, wait for the start on ``endpoint``, then trigger in a thread.

        Returns the trigger thread (None when a stop or abort came first).

        Raises
        ------
        DetectorError
            The detector refused.
        StreamError
            Its start message did not arrive within ``arm_timeout``.
        """

        def cancelled() -> bool:
            return signals.abort.is_set() or signals.stop.is_set()

        n = self.config.n_positions
        negotiated = self.client.configure_scan(n)
        logger.info("%s: %s", self.name, negotiated.describe())
        self.notes.append(negotiated.describe())
        if cancelled():
            return None
        seq = self.client.arm()
        self.armed = True
        signals.expected_series = seq
        signals.hold_starts = False
        logger.info("%s: detector armed for %d images (sequence id %s)", self.name, n, seq)
        timeout = self.config.arm_timeout
        deadline = time.monotonic() + timeout
        while not signals.started.wait(0.05):
            if cancelled() or done():
                return None
            if time.monotonic() > deadline:
                raise StreamError(
                    f"the detector at {self.config.detector_url} was armed (series {seq}) but "
                    f"its start message did not arrive on {endpoint} within {timeout:g} s "
                    "(arm_timeout): that endpoint is not this detector's stream, or its stream "
                    "is disabled; set stream_endpoint. The detector was disarmed, not triggered"
                )
        trigger = threading.Thread(
            target=self._trigger,
            args=(cancelled,),
            name=f"stemdaq-trigger-{self.name}",
            daemon=True,
        )
        trigger.start()
        return trigger

    def _trigger(self, cancelled: Callable[[], bool]) -> None:
        try:
            self.client.trigger()  # blocks for the whole series on a real DCU
        except Exception as exc:  # the series may still complete; record and go on
            if not cancelled():
                logger.warning("%s: detector trigger failed: %s", self.name, exc)
                self.warnings.append(f"trigger failed: {exc}")

    def command(self, name: str) -> None:
        """``disarm`` or ``abort`` (only if armed); a failure is a warning, never raised."""
        if not self.armed:
            return
        try:
            getattr(self.client, name)()
        except Exception as exc:
            logger.warning("%s: detector %s failed: %s", self.name, name, exc)
            self.warnings.append(f"detector {name} failed: {exc}")

    def command_in_background(self, name: str) -> None:
        """:meth:`command` in a thread of its own (a stop must not block its caller)."""
        threading.Thread(
            target=self.command, args=(name,), name=f"stemdaq-{name}-{self.name}", daemon=True
        ).start()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()
