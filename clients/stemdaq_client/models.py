"""Typed results of the stemdaq REST API (mirrors of the service's response bodies).

Defined here, not imported from the service: the client speaks HTTP only. Unknown fields are
kept (``extra="allow"``) so a newer server does not break an older client.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class AcquisitionState(str, enum.Enum):  # noqa: UP042 - same as the service
    """Life cycle of one acquisition."""

    ARMED = "armed"
    ACQUIRING = "acquiring"
    FINISHING = "finishing"
    COMPLETED = "completed"
    COMPLETED_WITH_GAPS = "completed_with_gaps"
    ABORTED = "aborted"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """True once the file is closed."""
        return self in (
            AcquisitionState.COMPLETED,
            AcquisitionState.COMPLETED_WITH_GAPS,
            AcquisitionState.ABORTED,
            AcquisitionState.FAILED,
        )


class Counters(_Model):
    """Frame accounting of one acquisition."""

    frames_expected: int = 0
    frames_received: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    messages_ignored: int = 0
    bytes_received: int = 0
    bytes_written: int = 0
    frames_missing: int = 0
    gaps: int = 0
    summary_cpu_seconds: float = 0.0
    summary_grid_step: int = 1


class Acquisition(_Model):
    """One acquisition: state, counters, and where its data are."""

    id: str
    state: AcquisitionState
    file_path: str
    file_uri: str
    dataset_path: str
    shape: list[int] | None = None
    dtype: str | None = None
    chunk_shape: list[int] | None = None
    channels: list[str] = Field(default_factory=list)
    series_id: int | None = None
    frames_expected: int = 0
    frames_written: int = 0
    rows_written: int = 0
    writing: bool = False
    writing_file_uri: str | None = None
    frame_shape: list[int] | None = None
    swmr: bool = True
    frames_dropped: int = 0
    counters: Counters = Field(default_factory=Counters)
    frames_per_second: float = 0.0
    mb_per_second: float = 0.0
    queue_depth: int = 0
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    elapsed_seconds: float = 0.0
    eta_seconds: float | None = None
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    detector_protocol: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class Status(_Model):
    """``GET /api/v1/status``."""

    state: str  # idle, armed, acquiring, finishing, error
    version: str
    data_dir: str
    acquisition: Acquisition | None = None
    frames_expected: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    frames_per_second: float = 0.0
    mb_per_second: float = 0.0
    queue_depth: int = 0
    elapsed_seconds: float = 0.0
    eta_seconds: float | None = None


class Config(_Model):
    """The acquisition config (the names facility scripts rely on, plus everything else)."""

    detector_url: str | None = None
    stream_endpoint: str | None = None
    scan_shape: list[int]
    scan_step: list[float]
    scan_origin: list[float] = Field(default_factory=lambda: [0.0, 0.0])
    scan_unit: str
    serpentine: bool = False
    channel: str | None = None
    file_template: str
    compression: str


class AcquisitionPage(_Model):
    """One page of the history, newest first."""

    items: list[Acquisition]
    total: int
    offset: int
    limit: int


class Event(_Model):
    """One server-sent event: ``snapshot``, ``state`` or ``progress``."""

    event: str
    acquisition: Acquisition


class Flush(_Model):
    """``POST /api/v1/acquisitions/{id}/flush``."""

    flushed: bool
    acquisition: Acquisition
