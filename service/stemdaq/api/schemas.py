"""Response bodies of the REST API that are not shared models (those live in ``stemdaq.models``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stemdaq.metrics import ServiceState
from stemdaq.models import AcquisitionInfo


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer of the API."""

    detail: str = Field(description="What went wrong, in one readable message")


class Health(BaseModel):
    """Liveness answer of ``GET /healthz``."""

    status: Literal["ok"] = Field("ok", description="Always 'ok' while the server answers")
    version: str = Field(description="stemdaq version")


class Status(BaseModel):
    """The service at a glance: what ``GET /api/v1/status`` answers."""

    state: ServiceState = Field(
        description="idle, armed, acquiring, finishing, or error (the last acquisition failed)"
    )
    version: str = Field(description="stemdaq version")
    data_dir: str = Field(description="Absolute data directory; file names are relative to it")
    acquisition: AcquisitionInfo | None = Field(
        None, description="The running acquisition, else the most recent one"
    )
    frames_expected: int = Field(0, description="Of the acquisition shown")
    frames_written: int = Field(0, description="Of the acquisition shown (monotonic)")
    frames_dropped: int = Field(0, description="Of the acquisition shown")
    frames_per_second: float = Field(0.0, description="Write rate over the last second")
    mb_per_second: float = Field(0.0, description="Uncompressed MB/s over the last second")
    queue_depth: int = Field(0, description="Frames waiting between receiver and writer")
    elapsed_seconds: float = Field(0.0, description="Seconds since the series start")
    eta_seconds: float | None = Field(None, description="Estimated seconds to completion")


class AcquisitionPage(BaseModel):
    """One page of the acquisition history, newest first."""

    items: list[AcquisitionInfo] = Field(description="Acquisitions on this page")
    total: int = Field(description="Acquisitions in the history")
    offset: int = Field(description="Index of the first item")
    limit: int = Field(description="Page size asked for")


class NexusTree(BaseModel):
    """The NeXus tree of an acquisition's file (no bulk data)."""

    id: str = Field(description="Acquisition id")
    file_path: str = Field(description="Path read (the .partial file while recording)")
    complete: bool = Field(description="False while the file is still being written")
    tree: dict[str, Any] = Field(
        description="Root group: {'type': 'group', 'attrs': {...}, 'children': {name: node}}; "
        "datasets carry shape, dtype, chunks, maxshape, filters and, when tiny, value"
    )


class FlushResult(BaseModel):
    """Answer of ``POST /api/v1/acquisitions/{id}/flush``."""

    flushed: bool = Field(
        description="True once the frames counted are visible to SWMR readers, or when there "
        "was nothing to flush (file not open yet, or closed); false if the data thread did not "
        "flush within 5 s or the flush failed"
    )
    acquisition: AcquisitionInfo = Field(
        description="The acquisition as the data thread saw it right after the flush (SWMR "
        "readers see at least the frames and rows it counts); as it is now when there was "
        "nothing to flush"
    )
