"""``GET /api/v1/events``: server-sent events of state changes and progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from stemdaq.api.deps import ManagerDep, ReadAuth
from stemdaq.manager import AcquisitionManager

router = APIRouter(tags=["events"], dependencies=[ReadAuth])

_KEEPALIVE = 15.0  # seconds between comments that keep proxies from closing the stream


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Events `state` (a state change) and `progress` (about 1/s while "
            "acquiring), each with an AcquisitionInfo as JSON data. The first event, `snapshot`, "
            "is the running or most recent acquisition, if any.",
        }
    },
)
async def stream_events(manager: ManagerDep, request: Request) -> StreamingResponse:
    """Server-sent events: acquisition state changes and progress."""
    return StreamingResponse(
        _sse(manager, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(manager: AcquisitionManager, request: Request) -> AsyncIterator[str]:
    queue = manager.subscribe()
    try:
        yield "retry: 2000\n\n"
        latest = manager.latest()
        if latest is not None:
            yield _format("snapshot", latest.model_dump_json())
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), _KEEPALIVE)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield ": keepalive\n\n"
                continue
            if event is None:  # the service is shutting down
                return
            yield _format(event.kind, event.info.model_dump_json())
    finally:
        manager.unsubscribe(queue)


def _format(kind: str, data: str) -> str:
    return f"event: {kind}\ndata: {data}\n\n"
