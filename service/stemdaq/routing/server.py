"""``stemdaq fan``: the fan as a process, driven over HTTP + JSON.

Routes::

    GET  /healthz      liveness
    GET  /metrics      Prometheus: frames routed and dropped per rank, routing CPU
    GET  /fan          FanCounters of the current (or last) series
    POST /fan/arm      FanArm: connect to the detector's stream and route one series
    POST /fan/series   FanSeries: active mode, the detector's series (only its end ends routing)
    POST /fan/abort    stop routing
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from stemdaq import __version__
from stemdaq.routing.fan import Fan

logger = logging.getLogger(__name__)

FAN_ROUTES = ("/healthz", "/metrics", "/fan", "/fan/arm", "/fan/series", "/fan/abort")


class FanArm(BaseModel):
    """One series to route."""

    stream_endpoint: str = Field(description="The detector's ZeroMQ PUSH endpoint")
    n_k: int = Field(ge=1, description="Scan positions per row")
    block_rows: int = Field(ge=1, description="Scan rows per block")
    ranks: int = Field(ge=1, le=64, description="Ranks expected (must match the fan's)")


class FanSeries(BaseModel):
    """The detector's series (active mode)."""

    series_id: int = Field(ge=0, description="The detector's sequence id")


def create_fan_app(fan: Fan) -> FastAPI:
    """The HTTP app of ``fan`` (see the module docstring)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        fan.close()

    app = FastAPI(title="stemdaq fan", version=__version__, lifespan=lifespan)

    @app.get("/healthz")
    async def get_health() -> dict[str, Any]:
        """Liveness."""
        return {"status": "ok", "version": __version__, "ranks": fan.ranks}

    @app.get("/fan")
    async def get_fan() -> dict[str, Any]:
        """What the fan did in the current (or last) series."""
        return {"ranks": fan.ranks, "busy": fan.busy, **dataclasses.asdict(fan.counters)}

    @app.post("/fan/arm", response_model=None)
    def arm_fan(req: FanArm) -> dict[str, Any] | JSONResponse:
        """Route one series."""
        if req.ranks != fan.ranks:
            return JSONResponse(
                {"detail": f"the fan serves {fan.ranks} ranks, not {req.ranks}"}, status_code=422
            )
        if fan.busy:
            return JSONResponse({"detail": "the fan is routing a series"}, status_code=409)
        fan.arm(req.stream_endpoint, n_k=req.n_k, block_rows=req.block_rows)
        return {"ranks": fan.ranks, "busy": True}

    @app.post("/fan/series")
    def set_fan_series(req: FanSeries) -> dict[str, Any]:
        """Active mode: end routing only at the end of this series."""
        fan.expect_series(req.series_id)
        return {"ranks": fan.ranks, "busy": fan.busy, **dataclasses.asdict(fan.counters)}

    @app.post("/fan/abort")
    def abort_fan() -> dict[str, Any]:
        """Stop routing."""
        fan.abort()
        fan.wait(5)
        return {"ranks": fan.ranks, "busy": fan.busy, **dataclasses.asdict(fan.counters)}

    @app.get("/metrics", response_class=Response)
    async def get_metrics() -> Response:
        """Prometheus metrics of the fan."""
        c = fan.counters
        lines = ["# TYPE stemdaq_fan_frames_routed_total counter"]
        lines += [
            f'stemdaq_fan_frames_routed_total{{rank="{r}"}} {n}' for r, n in enumerate(c.frames)
        ]
        lines += ["# TYPE stemdaq_fan_frames_dropped_total counter"]
        lines += [
            f'stemdaq_fan_frames_dropped_total{{rank="{r}"}} {n}' for r, n in enumerate(c.dropped)
        ]
        lines += [
            "# TYPE stemdaq_fan_cpu_seconds_total counter",
            f"stemdaq_fan_cpu_seconds_total {c.cpu_seconds}",
        ]
        return Response("\n".join(lines) + "\n", media_type=CONTENT_TYPE_LATEST)

    return app
