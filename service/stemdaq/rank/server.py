"""``stemdaq rank``: one writer rank as a process, driven over HTTP + JSON.

Routes (all JSON)::

    GET  /healthz         liveness (Kubernetes probes)
    GET  /metrics         Prometheus: this rank's frames received/written/dropped, its state
    GET  /rank            index, pid and the current acquisition (info + its series start)
    POST /rank/arm        RankArm: write the frames this rank owns to its own file
    POST /rank/series     RankSeries: active mode, the detector's series (held starts released)
    POST /rank/stop       stop the current acquisition (keeps what was recorded)
    POST /rank/abort      abort it
    GET/PUT /rank/live... this rank's share of the live view (see :mod:`stemdaq.rank.live`)

The rank runs the same :class:`~stemdaq.acquisition.Acquisition` as a one-process service, in
passive mode on the fan's port for this rank, counting as expected only the positions it owns.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from stemdaq import __version__
from stemdaq.api.errors import status_of
from stemdaq.config import AcquisitionConfig
from stemdaq.errors import BusyError, ConfigError, PathError, StemdaqError
from stemdaq.models import AcquisitionInfo, SeriesStart
from stemdaq.rank.live import LIVE_ROUTES, add_live_routes
from stemdaq.rank.ownership import Ownership
from stemdaq.settings import Settings

logger = logging.getLogger(__name__)

RANK_ROUTES = (
    "/healthz",
    "/metrics",
    "/rank",
    "/rank/arm",
    "/rank/series",
    "/rank/stop",
    "/rank/abort",
    *LIVE_ROUTES,
)


class RankArm(BaseModel):
    """One rank's share of an acquisition, as the service sends it."""

    acq_id: str = Field(description="The service's acquisition id")
    config: dict[str, Any] = Field(description="AcquisitionConfig; stream_endpoint: the fan's")
    file_path: str = Field(description="This rank's file (absolute, inside the data folder)")
    ranks: int = Field(ge=1, le=64, description="Ranks of the acquisition")
    rank_index: int = Field(ge=0, le=63, description="Which rank this is")
    block_rows: int = Field(ge=1, description="Scan rows per block")
    overwrite: bool = Field(False, description="Allow replacing a finished file of that name")
    hold_starts: bool = Field(
        False, description="Active mode: open a series only once POST /rank/series names it"
    )


class RankSeries(BaseModel):
    """The series the detector was armed for (active mode)."""

    series_id: int = Field(ge=0, description="The detector's sequence id")


def start_as_json(start: SeriesStart | None) -> dict[str, Any] | None:
    """The series start as JSON (``raw`` fields that JSON cannot hold are left out)."""
    if start is None:
        return None
    out: dict[str, Any] = {}
    for f in dataclasses.fields(start):
        value = getattr(start, f.name)
        if f.name == "detector":
            value = value.model_dump(mode="json")
        elif f.name == "raw":
            value = {k: v for k, v in value.items() if _jsonable(v)}
        out[f.name] = value
    return out


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class RankService:
    """The acquisitions of one rank, one at a time."""

    def __init__(self, settings: Settings, index: int) -> None:
        self.settings = settings
        self.index = index
        self.data_dir = Path(settings.data_dir).resolve()
        self.current: Any = None  # stemdaq.acquisition.Acquisition
        self.finished = 0

    def arm(self, req: RankArm) -> AcquisitionInfo:
        """Start writing this rank's share; refused (StemdaqError) before anything is made."""
        from stemdaq.acquisition import Acquisition

        if req.rank_index != self.index:
            raise ConfigError(f"this is rank {self.index}, not rank {req.rank_index}")
        if self.current is not None and not self.current.state.is_final:
            raise BusyError(f"rank {self.index} is busy with acquisition {self.current.acq_id}")
        path = Path(req.file_path)
        if not path.is_absolute() or not path.resolve().is_relative_to(self.data_dir):
            raise PathError(f"{req.file_path} is not inside this rank's data folder")
        try:
            config = AcquisitionConfig.model_validate(req.config)
            owned = Ownership(req.ranks, req.rank_index, req.block_rows, config.scan_shape)
        except ValueError as exc:
            raise ConfigError(f"rank {self.index}: {exc}") from None
        if self.current is not None:
            self.current.close(timeout=5)
        acq = Acquisition(
            config,
            path,
            acq_id=f"{req.acq_id}/r{self.index:02d}",
            queue_size=self.settings.queue_size,
            compress_workers=self.settings.compress_workers,
            overwrite=req.overwrite,
            expected_positions=owned.owned_positions,
            hold_starts=req.hold_starts,
        )
        self.current = acq
        acq.start()
        return acq.info()

    def status(self) -> dict[str, Any]:
        """This rank and its current (or last) acquisition."""
        acq = self.current
        return {
            "index": self.index,
            "pid": os.getpid(),
            "version": __version__,
            "acquisition": acq.info().model_dump(mode="json") if acq is not None else None,
            "series_start": start_as_json(acq.series_start) if acq is not None else None,
        }

    def metrics(self) -> str:
        """Prometheus text: this rank's counters of the current acquisition."""
        acq = self.current
        c = acq.counters() if acq is not None else None
        lines = []
        for name, kind, value in (
            ("stemdaq_rank_frames_received_total", "counter", c.frames_received if c else 0),
            ("stemdaq_rank_frames_written_total", "counter", c.frames_written if c else 0),
            ("stemdaq_rank_frames_dropped_total", "counter", c.frames_dropped if c else 0),
            ("stemdaq_rank_bytes_written_total", "counter", c.bytes_written if c else 0),
        ):
            lines += [f"# TYPE {name} {kind}", f'{name}{{rank="{self.index}"}} {value}']
        state = acq.state.value if acq is not None else "idle"
        lines += [
            "# TYPE stemdaq_rank_state gauge",
            f'stemdaq_rank_state{{rank="{self.index}",state="{state}"}} 1',
        ]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Abort a running acquisition and wait for its file to close."""
        if self.current is not None:
            self.current.close(timeout=30)


def create_rank_app(settings: Settings, index: int) -> FastAPI:
    """The HTTP app of rank ``index`` (see the module docstring)."""
    service = RankService(settings, index)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title=f"stemdaq rank {index}", version=__version__, lifespan=lifespan)
    app.state.rank = service

    @app.exception_handler(StemdaqError)
    async def _error(request: Any, exc: StemdaqError) -> JSONResponse:
        logger.info("rank %d: %s refused: %s", index, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))

    @app.get("/healthz")
    async def get_health() -> dict[str, Any]:
        """Liveness."""
        return {"status": "ok", "version": __version__, "rank": index}

    @app.get("/metrics", response_class=Response)
    async def get_metrics() -> Response:
        """Prometheus metrics of this rank."""
        return Response(service.metrics(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/rank")
    def get_rank() -> dict[str, Any]:
        """This rank and its current acquisition."""
        return service.status()

    @app.post("/rank/arm")
    def arm_rank(req: RankArm) -> dict[str, Any]:
        """Write this rank's share of an acquisition."""
        return service.arm(req).model_dump(mode="json")

    @app.post("/rank/series")
    def set_rank_series(req: RankSeries) -> dict[str, Any]:
        """Open only this series (the detector's, once the service armed it)."""
        if service.current is None or service.current.state.is_final:
            raise ConfigError(f"rank {index} has no acquisition running")
        service.current.expect_series(req.series_id)
        return service.status()

    @app.post("/rank/stop")
    def stop_rank() -> dict[str, Any]:
        """Stop the current acquisition."""
        if service.current is not None:
            service.current.stop()
        return service.status()

    @app.post("/rank/abort")
    def abort_rank() -> dict[str, Any]:
        """Abort the current acquisition."""
        if service.current is not None:
            service.current.abort()
        return service.status()

    add_live_routes(app, service)
    return app


def rank_index_from_host(hostname: str) -> int | None:
    """The trailing ordinal of a StatefulSet pod name (``stemdaq-rank-3`` -> 3), else None."""
    head, _, tail = hostname.rpartition("-")
    return int(tail) if head and tail.isdigit() else None
