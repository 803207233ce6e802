"""Prometheus metrics, computed at scrape time from the manager (no per-frame Prometheus calls).

Names follow ``stemdaq_<noun>_<verb>_<unit>``. Counters are service-lifetime sums: the finished
acquisitions' totals plus the running one's counters. Every drop reason and every state is
exported from the first scrape on, so dashboards and alerts never see a missing series.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, get_args

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from stemdaq.models import DropReason, RankInfo

if TYPE_CHECKING:
    from stemdaq.manager import AcquisitionManager

#: values of ``stemdaq_state``: the service state reported by ``GET /api/v1/status``
ServiceState = Literal["idle", "armed", "acquiring", "finishing", "error"]
SERVICE_STATES: tuple[ServiceState, ...] = get_args(ServiceState)


def service_state(manager: AcquisitionManager) -> ServiceState:
    """``idle``/``armed``/``acquiring``/``finishing``; ``error`` if the last acquisition failed."""
    current = manager.current
    if current is not None and not current.state.is_final:
        state = current.state.value
        return state if state in ("armed", "acquiring") else "finishing"  # type: ignore[return-value]
    latest = manager.latest()
    if latest is not None and latest.state.value == "failed":
        return "error"
    return "idle"


class ManagerCollector(Collector):
    """Reads the manager's lifetime totals and the running acquisition at each scrape."""

    def __init__(self, manager: AcquisitionManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        """Yield every stemdaq metric family."""
        totals = self.manager.totals
        received, written, nbytes = (
            totals.frames_received,
            totals.frames_written,
            totals.bytes_written,
        )
        dropped = {r.value: 0 for r in DropReason}
        for reason, n in (totals.dropped or {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
        counts = list(totals.latency_counts or [])
        latency_sum = totals.latency_sum
        bounds: list[float] = []
        queue_depth = 0
        ranks: list[RankInfo] = []
        acq = self.manager.current
        if acq is not None:
            info = acq.info()
            ranks = info.ranks
            c = info.counters
            received += c.frames_received
            written += c.frames_written
            nbytes += c.bytes_written
            for reason, n in c.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
            bounds, running, running_sum = acq.latency_histogram()
            counts = [a + b for a, b in zip(counts or [0] * len(running), running, strict=False)]
            latency_sum += running_sum
            queue_depth = info.queue_depth
        if not bounds:
            bounds = _default_bounds()
        if len(counts) != len(bounds):
            counts = [0] * len(bounds)

        yield CounterMetricFamily(
            "stemdaq_frames_received", "Frames taken off the detector stream", value=received
        )
        yield CounterMetricFamily(
            "stemdaq_frames_written", "Frames stored in NeXus files", value=written
        )
        family = CounterMetricFamily(
            "stemdaq_frames_dropped",
            "Frames that did not reach the file, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(dropped.items()):
            family.add_metric([reason], n)
        yield family
        yield CounterMetricFamily(
            "stemdaq_bytes_written", "Chunk bytes written (compressed)", value=nbytes
        )
        yield HistogramMetricFamily(
            "stemdaq_write_duration_seconds",
            "Time to write one frame chunk to HDF5",
            buckets=[(_le(b), n) for b, n in zip(bounds, counts, strict=True)],
            sum_value=latency_sum,
        )
        yield GaugeMetricFamily(
            "stemdaq_queue_depth", "Frames waiting between receiver and writer", value=queue_depth
        )
        yield from _rank_families(ranks)
        state = service_state(self.manager)
        yield StateSetMetricFamily(
            "stemdaq_state", "Service state", value={s: s == state for s in SERVICE_STATES}
        )


def _rank_families(ranks: list[RankInfo]) -> Iterator[Metric]:
    """Scale-out: the running acquisition's frames per rank and whether each rank is up."""
    written = GaugeMetricFamily(
        "stemdaq_rank_frames_written",
        "Frames the running acquisition's rank wrote to its file (scale-out)",
        labels=["rank"],
    )
    up = GaugeMetricFamily(
        "stemdaq_rank_up", "1 unless the rank was lost (scale-out)", labels=["rank"]
    )
    for r in ranks:
        written.add_metric([str(r.index)], r.frames_written)
        up.add_metric([str(r.index)], 0 if r.state == "lost" else 1)
    yield written
    yield up


def _default_bounds() -> list[float]:
    try:
        from stemdaq.acquisition import LATENCY_BUCKETS
    except ImportError:  # engine not importable (optional parts missing): same buckets
        LATENCY_BUCKETS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1, 1.0)  # noqa: N806
    return [*LATENCY_BUCKETS, float("inf")]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def build_registry(manager: AcquisitionManager) -> CollectorRegistry:
    """A registry of this app's own (no process-global state): one per ``create_app``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ManagerCollector(manager))
    return registry
