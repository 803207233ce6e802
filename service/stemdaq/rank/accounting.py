"""Every frame of one data path counted: written, dropped by reason, write latency, rate.

:class:`Accounts` is the data thread's own bookkeeping of what happened to each frame after the
receiver placed it (the receiver's :class:`~stemdaq.receiver.SeriesTracker` counts what came in
and what it refused). The data thread changes it; other threads only read it: the counters are
plain ints and dicts, whose reads are atomic under the GIL, so there is no lock on the per-frame
path. :func:`merge_counters` joins both sides into the :class:`~stemdaq.models.Counters` the
API, the CLI and the file report.
"""

from __future__ import annotations

import bisect
import logging
import time
from typing import Any, cast

import zmq

from stemdaq.errors import DecodeError
from stemdaq.models import EXTRA_DROPS, Counters, DropReason, Frame

logger = logging.getLogger(__name__)

_REASONS = {r.value for r in DropReason}
#: write-latency histogram bucket upper bounds, seconds
LATENCY_BUCKETS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1, 1.0)


def drop_reason(exc: DecodeError) -> DropReason:
    """The drop reason a codec error names (``corrupt`` when it names none we know)."""
    return DropReason(exc.reason) if exc.reason in _REASONS else DropReason.CORRUPT


class Accounts:
    """What the data thread did with the frames it was given (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.written = 0
        self.bytes_written = 0
        #: frames that did not reach the file after placement, by reason
        self.dropped: dict[str, int] = {}
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.rate = (0.0, 0.0)  # frames/s, MB/s (uncompressed)
        self._rate_mark = (time.monotonic(), 0)
        self._logged: set[str] = set()

    def wrote(self, nbytes: int, seconds: float) -> None:
        """A frame went to the writer in ``seconds``; ``nbytes`` of chunk data."""
        self.written += 1
        self.bytes_written += nbytes
        self.latency_sum += seconds
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def wrote_run(self, n: int, nbytes: int, seconds: float) -> None:
        """``n`` frames went to the writer together (the in-order lane's full chunk) in
        ``seconds``: each counted with an equal share of the time."""
        self.written += n
        self.bytes_written += nbytes
        self.latency_sum += seconds
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds / n)] += n

    def drop(self, reason: DropReason, frame: Frame, detail: str) -> None:
        """Count a frame that does not reach the file; log the first of each reason only."""
        key = reason.value
        self.dropped[key] = self.dropped.get(key, 0) + 1
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(
                "%s: frame %d (%s) dropped: %s: %s (further %s drops are counted, not logged)",
                self.name,
                frame.frame_id,
                frame.channel,
                key,
                detail,
                key,
            )

    def update_rate(self, now: float, frame_nbytes: int) -> None:
        """Frames/s and MB/s (uncompressed) since the last update (once a second)."""
        t0, n0 = self._rate_mark
        fps = (self.written - n0) / (now - t0) if now > t0 else 0.0
        self.rate = (fps, fps * frame_nbytes / 1e6)
        self._rate_mark = (now, self.written)

    def count_unread(
        self, sock: zmq.Socket, decode: Any, series: int | None, budget: float = 0.5
    ) -> None:
        """Frames of this series already queued when an abort came are not written: count
        them as dropped (``aborted``) rather than lose them silently (reads for ``budget`` s)."""
        deadline, n = time.monotonic() + budget, 0
        while time.monotonic() < deadline:
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += sum(1 for e in decode(parts) if type(e) is Frame and e.series_id == series)
        if n:
            self.dropped[DropReason.ABORTED.value] = n
            logger.warning("%s: %d received frames not written (aborted)", self.name, n)


def merge_counters(
    received: dict[str, Any],
    accounts: Accounts,
    *,
    expected: int,
    frames_written: int,
    summary: Any,
    final: bool,
) -> Counters:
    """The receiver's counts (``SeriesTracker.counters()``) and the data thread's, as one
    :class:`Counters`; gaps and ``missing`` only once ``final``."""
    dropped: dict[str, int] = dict(cast("dict[str, int]", received.get("dropped", {})))
    for reason, n in accounts.dropped.items():
        dropped[reason] = dropped.get(reason, 0) + n
    gaps = max(0, expected - frames_written) if final else 0
    for_scan = sum(n for reason, n in dropped.items() if reason not in EXTRA_DROPS)
    return Counters(
        frames_expected=expected,
        frames_received=cast(int, received.get("frames_received", 0)),
        # frames in the file: with K frames per chunk, a frame counts once its chunk is
        frames_written=frames_written,
        frames_dropped=sum(dropped.values()),
        dropped=dropped,
        messages_ignored=cast(int, received.get("messages_ignored", 0)),
        bytes_received=cast(int, received.get("bytes_received", 0)),
        bytes_written=accounts.bytes_written,
        frames_missing=max(0, gaps - for_scan),
        gaps=gaps,
        summary_frames=summary.included if summary is not None else 0,
        summary_cpu_seconds=summary.cpu_seconds if summary is not None else 0.0,
        summary_grid_step=summary.grid_step if summary is not None else 1,
    )


def drop_line(counters: Counters) -> str | None:
    """One line with every drop reason and its count, None if nothing was dropped."""
    dropped = {k: v for k, v in counters.dropped.items() if v}
    if not dropped:
        return None
    return "frames dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
