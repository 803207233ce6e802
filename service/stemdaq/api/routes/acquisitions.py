"""``/api/v1/acquisitions``: arm, list, get, stop, abort, wait, flush, and the file's NeXus tree."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi import Path as PathParam

from stemdaq.api.deps import ControlAuth, ManagerDep, ReadAuth
from stemdaq.api.nexus_tree import read_tree
from stemdaq.api.schemas import AcquisitionPage, ErrorResponse, FlushResult, NexusTree
from stemdaq.config import AcquisitionConfig
from stemdaq.models import AcquisitionInfo, AcquisitionState

router = APIRouter(prefix="/acquisitions", tags=["acquisitions"])

MAX_WAIT = 60.0  # seconds one long-poll may hold a request
MAX_COUNT = 1 << 40  # frames/rows a wait may ask for (more than any scan holds)
FLUSH_TIMEOUT = 5.0  # seconds a flush request waits for the data thread (it ticks every ~1 s)

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


@router.get(
    "/{acq_id}/wait",
    response_model=AcquisitionInfo,
    dependencies=[ReadAuth],
    responses={**_NOT_FOUND, 422: {"model": ErrorResponse, "description": "Bad query"}},
)
async def wait_acquisition(
    manager: ManagerDep,
    acq_id: AcqId,
    frames_written_ge: Annotated[
        int | None,
        Query(ge=0, le=MAX_COUNT, description="Return once frames_written >= this"),
    ] = None,
    rows_written_ge: Annotated[
        int | None,
        Query(ge=0, le=MAX_COUNT, description="Return once rows_written >= this"),
    ] = None,
    timeout: Annotated[
        float,
        Query(gt=0, le=MAX_WAIT, description=f"Seconds to wait at most (<= {MAX_WAIT:g})"),
    ] = 10.0,
) -> AcquisitionInfo:
    """Long-poll: the acquisition once ``frames_written >= frames_written_ge`` and
    ``rows_written >= rows_written_ge`` (those given), once it is final, or after ``timeout`` s,
    whichever comes first; at once if already so. Progress is published about once a second,
    so the answer comes within about a second of the condition. The caller compares the counts.
    """
    info = manager.get(acq_id)
    if _waited_for(info, frames_written_ge, rows_written_ge):
        return info
    queue = manager.subscribe()  # every state change and progress event from now on
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        info = manager.get(acq_id)  # anything published before subscribing is seen here
        while not _waited_for(info, frames_written_ge, rows_written_ge):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
            if event is None:  # the service is shutting down
                break
            if event.info.id == acq_id:
                info = manager.get(acq_id)
        return manager.get(acq_id)
    finally:
        manager.unsubscribe(queue)


def _waited_for(info: AcquisitionInfo, frames: int | None, rows: int | None) -> bool:
    """True when the wait is over: the counts are reached or nothing will change any more."""
    if info.state.is_final:
        return True
    return (frames is None or info.frames_written >= frames) and (
        rows is None or info.rows_written >= rows
    )


@router.post(
    "/{acq_id}/flush",
    response_model=FlushResult,
    dependencies=[ControlAuth],
    responses={**_CONTROL, **_NOT_FOUND},
)
async def flush_acquisition(manager: ManagerDep, acq_id: AcqId) -> FlushResult:
    """Make every frame counted so far visible to SWMR readers of the file being written.

    The data thread flushes at its next tick (within about a second). ``flushed`` is true once it
    has, or when there is nothing to flush (the file is not open yet, or closed: all on disk);
    false if the data thread did not get to it within a few seconds, or the flush failed. The
    acquisition in the answer is as the data thread saw it right after the flush, so a SWMR
    reader sees at least the frames and rows it counts.
    """
    info = manager.get(acq_id)
    acq = manager.current
    flushed, after = True, None
    if acq is not None and not info.state.is_final and acq.info().id == acq_id:
        flush = getattr(acq, "flush", None)  # an engine that cannot flush says so: false
        if flush is None:
            flushed = False
        else:
            flushed, after = await asyncio.to_thread(flush, FLUSH_TIMEOUT)
    return FlushResult(flushed=flushed, acquisition=after or manager.get(acq_id))
