"""An acquisition's snapshot for the API and the CLI (``AcquisitionInfo``), from its parts.

Built on request in the caller's thread and once a second in the data thread (the engine's
``on_change``): it only reads counters and flags the data thread keeps, never waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from stemdaq.config import AcquisitionConfig
from stemdaq.models import AcquisitionInfo, AcquisitionState, Counters
from stemdaq.rank import LATENCY_BUCKETS, DataPath
from stemdaq.rows import RowCounter
from stemdaq.writer import NexusWriter

logger = logging.getLogger(__name__)


def now_iso() -> str:
    """The time now, ISO 8601 in UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Times:
    """When the acquisition was created, started (its series began) and finished."""

    created_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    finished_at: str | None = None


class Notifier:
    """Tells an engine's listener (``on_change``) of a new snapshot; serialised, so snapshots
    arrive in the order they were taken; a listener's error is logged, never raised."""

    def __init__(
        self,
        on_change: Callable[[AcquisitionInfo], None] | None,
        info: Callable[[], AcquisitionInfo],
    ) -> None:
        self._on_change, self._info = on_change, info
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if self._on_change is None:
            return
        with self._lock:
            try:
                self._on_change(self._info())
            except Exception:
                logger.exception("on_change callback failed")


def cumulative(counts: list[int], total_seconds: float) -> tuple[list[float], list[int], float]:
    """The write-latency histogram as Prometheus wants it: bounds, cumulative counts, sum."""
    out, running = [], 0
    for c in counts:
        running += c
        out.append(running)
    return [*LATENCY_BUCKETS, float("inf")], out, total_seconds


def take(
    acq_id: str,
    config: AcquisitionConfig,
    state: AcquisitionState,
    file_path: Path,
    data: DataPath,
    writer: NexusWriter,
    rows: RowCounter,
    counters: Counters,
    elapsed: float,
    done: bool,
    times: Times,
    error: str | None,
    warnings: list[str],
    detector_notes: list[str] | None,
) -> AcquisitionInfo:
    """One acquisition's ``AcquisitionInfo`` (see the models for what each field means)."""
    final = state.is_final
    fps, mbs = data.accounts.rate if not final else (0.0, 0.0)
    eta = None
    if state == AcquisitionState.ACQUIRING and fps > 0:
        eta = max(0.0, (counters.frames_expected - counters.frames_written) / fps)
    frame_shape = data.frame_shape
    shape = [*config.scan_shape, *frame_shape] if frame_shape else None
    path = (writer.current_path if final and data.opened else file_path).resolve()
    writing = writer.is_open and not done
    return AcquisitionInfo(
        id=acq_id,
        state=state,
        file_path=str(path),
        file_uri=path.as_uri(),
        dataset_path=writer.dataset_path,
        shape=shape,
        dtype=data.dtype,
        chunk_shape=list(chunks) if (chunks := writer.chunk_shape) else None,
        channels=list(data.channels),
        series_id=data.start.series_id if data.start else None,
        frames_expected=counters.frames_expected,
        frames_written=counters.frames_written,
        rows_written=rows.count(writer.written_mask) if data.opened else 0,
        writing=writing,
        writing_file_uri=writer.tmp_path.resolve().as_uri() if writing else None,
        frame_shape=list(frame_shape) if frame_shape else None,
        frames_dropped=counters.frames_dropped,
        counters=counters,
        frames_per_second=fps,
        mb_per_second=mbs,
        queue_depth=len(data.compression),
        created_at=times.created_at,
        started_at=times.started_at,
        finished_at=times.finished_at,
        elapsed_seconds=elapsed,
        eta_seconds=eta,
        error=error,
        warnings=warnings,
        detector_protocol="; ".join(detector_notes) if detector_notes else None,
        config=config.model_dump(mode="json"),
    )
