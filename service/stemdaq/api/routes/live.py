"""``/api/v1/live``: the live view of the running or last acquisition.

``GET /live`` (what there is), ``GET /live/{map}.png|.npy``, ``PUT /live/detectors`` (the
geometry, also kept in the config for the next acquisition), and the WebSocket
``/live/ws`` pushing the rows that changed (see :mod:`stemdaq.live.stream`), at most
``live_update_hz`` times a second per client.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from stemdaq.api.deps import ControlAuth, ManagerDep, ReadAuth
from stemdaq.api.schemas import ErrorResponse
from stemdaq.config import merge_config
from stemdaq.errors import ConfigError, NotFoundError
from stemdaq.live.geometry import DetectorsRequest
from stemdaq.live.hub import ALL_MAPS, LiveEngine, LiveHub, LiveSource, image_of, npy_bytes
from stemdaq.live.render import to_png
from stemdaq.live.stream import ClientCursor, next_update

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/live", tags=["live"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such map, or no live view yet"}
}
MapName = Annotated[str, PathParam(description=f"One of {', '.join(ALL_MAPS)}")]


class Geometry(BaseModel):
    """The virtual detectors, in detector pixels; null (only before a scan has frames): to be
    found from the calibration or the summed pattern."""

    center: tuple[float, float] | None = Field(description="Beam centre (x, y)")
    bf_radius: float | None = Field(description="Bright-field disk radius")
    adf_inner: float | None = Field(description="ADF annulus inner radius")
    adf_outer: float | None = Field(description="ADF annulus outer radius")


class LiveStatus(BaseModel):
    """What the live view has: maps, geometry, how much of the scan is in."""

    acquisition_id: str = Field(description="The acquisition the maps belong to")
    maps: list[str] = Field(description="Map names for /live/{map}.png and .npy")
    scan_shape: tuple[int, int] = Field(description="[n_m, n_k]")
    frame_shape: tuple[int, int] = Field(description="[ny, nx] of the summed pattern")
    scan_step: tuple[float, float] = Field(description="Scan step [m, k] in scan_unit")
    scan_unit: str = Field(description="Unit of scan_step")
    detectors: Geometry
    filled: int = Field(description="Scan positions in the maps")
    positions: int = Field(description="Scan positions in all")
    filled_rows: list[int] = Field(description="Per scan row, positions in the maps")
    grid_step: int = Field(description="Sampling now: 1 every frame, n every n-th row/column")
    version: int = Field(description="Changes whenever the maps change")
    lowres_shape: tuple[int, int] | None = Field(
        description="Binned copy kept per position to recompute after a geometry change"
    )
    finished: bool = Field(description="The acquisition ended; the maps are final")
    geometry_refused: int = Field(description="Geometry changes refused (422) since start")


def get_hub(request: Request) -> LiveHub:
    """The app's live hub."""
    hub: LiveHub = request.app.state.live
    return hub


def _source(request: Request) -> tuple[LiveSource, LiveEngine]:
    source = get_hub(request).latest
    engine = source.engine if source is not None else None
    if source is None or engine is None:
        raise NotFoundError("no live view: no acquisition has received a frame yet")
    return source, engine


@router.get("", response_model=LiveStatus, dependencies=[ReadAuth], responses=_NOT_FOUND)
async def get_live(request: Request) -> LiveStatus:
    """The live view of the running or last acquisition: maps, geometry, filled positions."""
    source, engine = _source(request)
    maps = engine.maps
    filled = maps.filled()
    det = engine.detectors
    return LiveStatus(
        acquisition_id=source.acq_id,
        maps=list(ALL_MAPS),
        scan_shape=maps.scan_shape,
        frame_shape=maps.frame_shape,
        scan_step=source.config.scan_step,
        scan_unit=source.config.scan_unit,
        detectors=Geometry(**det.as_dict()),  # type: ignore[arg-type]
        filled=int(filled.sum()),
        positions=maps.n_positions,
        filled_rows=filled.sum(axis=1).tolist(),
        grid_step=engine.grid_step,
        version=maps.version,
        lowres_shape=maps.lowres_shape,
        finished=engine.finished,
        geometry_refused=get_hub(request).refused,
    )


def _image(request: Request, name: str) -> Any:
    if name not in ALL_MAPS:
        raise NotFoundError(f"no map {name!r}; one of {', '.join(ALL_MAPS)}")
    _, engine = _source(request)
    return image_of(engine, name)


@router.get(
    "/{name}.npy",
    dependencies=[ReadAuth],
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"application/octet-stream": {}}}},
)
async def get_live_npy(request: Request, name: MapName) -> Response:
    """A map as a NumPy .npy file: scan-shaped float32 (NaN: not filled), or the summed
    pattern (detector-shaped float64)."""
    arr = await asyncio.to_thread(_image, request, name)  # ranks: may fetch their patterns
    return Response(npy_bytes(arr), media_type="application/octet-stream")


@router.get(
    "/{name}.png",
    dependencies=[ReadAuth],
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"image/png": {}}}},
)
async def get_live_png(request: Request, name: MapName) -> Response:
    """A map as a PNG (viridis, 1-99 % limits; the summed pattern on a log scale)."""
    arr = await asyncio.to_thread(_image, request, name)  # ranks: may fetch their patterns
    png = await asyncio.to_thread(to_png, arr, name == "sum_pattern")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.put(
    "/detectors",
    response_model=Geometry,
    dependencies=[ControlAuth],
    responses={
        401: {"model": ErrorResponse, "description": "Bearer token missing or wrong"},
        422: {"model": ErrorResponse, "description": "Not finite, outside the frame, empty"},
    },
)
async def put_live_detectors(
    request: Request,
    manager: ManagerDep,
    change: Annotated[DetectorsRequest, Body(description="Values to change; others stay")],
) -> Geometry:
    """Change the virtual detectors: the maps are recomputed at once (from the binned copy)
    and exact from then on. The values are kept in the config for the next acquisition."""
    given = change.model_dump(exclude_unset=True)
    source = get_hub(request).latest
    engine = source.engine if source is not None else None
    config = {f"live_{k}": v for k, v in given.items()}
    merge_config(manager.config, config)  # the config takes it too (else 422, nothing changed)
    if engine is not None:
        try:
            det = await asyncio.to_thread(engine.set_detectors, change)
        except ConfigError as exc:
            get_hub(request).refused += 1
            logger.warning("live view: geometry %s refused: %s", given, exc)
            raise
        await manager.update_config(config)
        return Geometry(**det.as_dict())  # type: ignore[arg-type]
    merged = await manager.update_config(config)
    return Geometry(  # no scan yet: what the next one starts with
        center=merged.live_center,
        bf_radius=merged.live_bf_radius,
        adf_inner=merged.live_adf_inner,
        adf_outer=merged.live_adf_outer,
    )


@router.websocket("/ws")
async def live_ws(websocket: WebSocket) -> None:
    """Binary updates of the maps (see :mod:`stemdaq.live.stream`), at most
    ``live_update_hz`` per second. With a read-protected service, pass ``?token=...``."""
    app = websocket.app
    settings = app.state.settings
    token = settings.token
    if token is not None and settings.api.protect_reads:
        given = websocket.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            await websocket.close(code=1008, reason="a bearer token is required")
            return
    await websocket.accept()
    hub: LiveHub = app.state.live
    manager = app.state.manager
    cursor = ClientCursor()
    receiver = asyncio.create_task(_until_disconnect(websocket))
    try:
        while not receiver.done():
            message = next_update(hub.latest, cursor)
            if message is not None:
                await websocket.send_bytes(message)
            await asyncio.wait({receiver}, timeout=1.0 / manager.config.live_update_hz)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    finally:
        receiver.cancel()


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
