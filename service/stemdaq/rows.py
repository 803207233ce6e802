"""What an external reader (bluesky, a SWMR client) needs beyond the counters: complete scan rows
and flushes on request.

:class:`RowCounter` counts the leading scan rows whose every frame is in the file. The writer
marks a frame written only once its chunk is in the file, and a mark never goes back, so the
count only grows; it resumes where it stopped, so a call costs one row check (~2 us) when
nothing changed.

:class:`FlushRequests` hands flush requests from HTTP threads to the data thread, which owns the
file (HDF5 and the writer's bookkeeping are touched by that thread only) and serves them at its
next tick, about once a second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class RowCounter:
    """Leading complete scan rows of a ``scan_shape = (n_m, n_k)`` scan (all channels)."""

    def __init__(self, scan_shape: tuple[int, int] | list[int]) -> None:
        self._n_m, self._n_k = int(scan_shape[0]), int(scan_shape[1])
        self._rows = 0
        self._mask: Any = None
        self._lock = threading.Lock()  # info() is called from the data thread and HTTP threads

    def count(self, written: np.ndarray) -> int:
        """Rows complete in ``written`` (the writer's ``[n_channels, n_m * n_k]`` uint8 mask)."""
        with self._lock:
            if written is not self._mask:  # the writer's bookkeeping is made when the file opens
                self._mask, self._rows = written, 0
            n_k, rows = self._n_k, self._rows
            while rows < self._n_m and written[:, rows * n_k : (rows + 1) * n_k].all():
                rows += 1
            self._rows = rows
            return rows


class _Request:
    """One flush request: set once served; ``ok`` says whether the flush succeeded, ``after``
    what the data thread's ``snapshot`` said right after it."""

    __slots__ = ("after", "done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.after: Any = None


class FlushRequests:
    """Flush requests waiting for the data thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[_Request] = []
        self._closed = False

    def request(self, timeout: float) -> tuple[bool, Any]:
        """Wait (up to ``timeout`` s) until the data thread flushed: (True, the snapshot taken
        right after the flush) if it did, (True, None) if the file is closed (everything is on
        disk then), (False, None) on timeout or if the flush failed."""
        req = _Request()
        with self._lock:
            if self._closed:
                return True, None
            self._waiters.append(req)
        if req.done.wait(timeout) and req.ok:
            return True, req.after
        return False, None

    def serve(
        self, flush: Callable[[], None], name: str, snapshot: Callable[[], Any] | None = None
    ) -> None:
        """Data thread: flush once for every request waiting, take ``snapshot`` (nothing is
        written between the two: what it counts, SWMR readers see), then release them."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
        if not waiters:
            return
        ok, after = True, None
        try:
            flush()
            after = snapshot() if snapshot is not None else None
        except Exception as exc:  # the writer's own periodic flush reports storage errors
            logger.error("%s: flush on request failed: %s", name, exc)
            ok = False
        for req in waiters:
            req.ok, req.after = ok, after
            req.done.set()

    def close(self) -> None:
        """The file is closed: release every request, answer later ones at once."""
        with self._lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        for req in waiters:
            req.ok = True
            req.done.set()
