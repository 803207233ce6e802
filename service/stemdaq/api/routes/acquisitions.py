"""``/api/v1/acquisitions``: arm, list, get, stop, abort, and the file's NeXus tree."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi import Path as PathParam

from stemdaq.api.deps import ControlAuth, ManagerDep, ReadAuth
from stemdaq.api.nexus_tree import read_tree
from stemdaq.api.schemas import AcquisitionPage, ErrorResponse, NexusTree
from stemdaq.config import AcquisitionConfig
from stemdaq.models import AcquisitionInfo, AcquisitionState

router = APIRouter(prefix="/acquisitions", tags=["acquisitions"])

AcqId = Annotated[str, PathParam(description="Acquisition id, e.g. 20261124-081530-0001")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such acquisition"}
}
_CONTROL: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Bearer token missing or wrong"}
}


@router.post(
    "",
    response_model=AcquisitionInfo,
    status_code=201,
    dependencies=[ControlAuth],
    responses={
        **_CONTROL,
        409: {"model": ErrorResponse, "description": "An acquisition is running"},
        422: {"model": ErrorResponse, "description": "Bad override or file name"},
        502: {"model": ErrorResponse, "description": "The detector refused (active mode)"},
    },
)
async def arm_acquisition(
    manager: ManagerDep,
    response: Response,
    overrides: Annotated[
        AcquisitionConfig | None,
        Body(description="Per-acquisition changes to the current config, e.g. scan_shape"),
    ] = None,
) -> AcquisitionInfo:
    """Arm an acquisition: reserve the file, connect to the stream and, with a SIMPLON URL
    configured, configure, arm and trigger the detector. Returns the id and file path.
    """
    info = await manager.arm(overrides.model_dump(exclude_unset=True) if overrides else None)
    response.headers["Location"] = f"{router.prefix}/{info.id}"
    return info


@router.get("", response_model=AcquisitionPage, dependencies=[ReadAuth])
async def list_acquisitions(
    manager: ManagerDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="First item")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 50,
    state: Annotated[
        AcquisitionState | None,
        Query(description="Only acquisitions in this state, e.g. completed"),
    ] = None,
) -> AcquisitionPage:
    """The acquisition history, newest first (kept across restarts); ``total`` counts the
    acquisitions that match ``state``."""
    items, total = manager.list(offset, limit, state=state)
    return AcquisitionPage(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/{acq_id}", response_model=AcquisitionInfo, dependencies=[ReadAuth], responses=_NOT_FOUND
)
async def get_acquisition(manager: ManagerDep, acq_id: AcqId) -> AcquisitionInfo:
    """State, counters, and what bluesky needs: file URI, dataset path, shape, dtype, chunks."""
    return manager.get(acq_id)


@router.post(
    "/{acq_id}/stop",
    response_model=AcquisitionInfo,
    dependencies=[ControlAuth],
    responses={**_CONTROL, **_NOT_FOUND},
)
async def stop_acquisition(manager: ManagerDep, acq_id: AcqId) -> AcquisitionInfo:
    """Finish on end-of-series, or after end_timeout of stream silence. Idempotent."""
    return manager.stop(acq_id)


@router.post(
    "/{acq_id}/abort",
    response_model=AcquisitionInfo,
    dependencies=[ControlAuth],
    responses={**_CONTROL, **_NOT_FOUND},
)
async def abort_acquisition(manager: ManagerDep, acq_id: AcqId) -> AcquisitionInfo:
    """Close the file now; frames not yet received stay marked as gaps. Idempotent."""
    return manager.abort(acq_id)


@router.get(
    "/{acq_id}/metadata",
    response_model=NexusTree,
    dependencies=[ReadAuth],
    responses={**_NOT_FOUND, 409: {"model": ErrorResponse, "description": "File not readable yet"}},
)
async def get_acquisition_metadata(manager: ManagerDep, acq_id: AcqId) -> NexusTree:
    """The file's NeXus tree: groups, attributes, dataset shapes, dtypes, chunks, filters.

    While the acquisition runs, and when only ``<file>.partial`` is left (a crash, a failed
    close), the partial file is read in SWMR mode and ``complete`` is false.
    """
    info = manager.get(acq_id)
    final = Path(info.file_path)
    running = not info.state.is_final
    path = final
    if running or not await asyncio.to_thread(final.exists):
        partial = final.with_name(final.name + ".partial")
        if await asyncio.to_thread(partial.exists):
            path = partial
    is_partial = path.name.endswith(".partial")  # also when the record names the .partial
    tree = await asyncio.to_thread(read_tree, path, swmr=running or is_partial)
    return NexusTree(
        id=info.id, file_path=str(path), complete=not running and not is_partial, tree=tree
    )
