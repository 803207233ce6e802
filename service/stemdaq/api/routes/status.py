"""``GET /api/v1/status``: the service at a glance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from stemdaq import __version__
from stemdaq.api.deps import ManagerDep, ReadAuth
from stemdaq.api.schemas import Status
from stemdaq.metrics import service_state

router = APIRouter(tags=["status"], dependencies=[ReadAuth])


@router.get("/status", response_model=Status)
async def get_status(manager: ManagerDep) -> Status:
    """State (idle, armed, acquiring, finishing, error), current acquisition, counters, rates."""
    info = manager.latest()
    running = manager.current is not None and info is not None and not info.state.is_final
    fields: dict[str, Any] = {}
    if info is not None:
        fields = {
            "frames_expected": info.frames_expected,
            "frames_written": info.frames_written,
            "frames_dropped": info.frames_dropped,
        }
        if running:
            fields |= {
                "frames_per_second": info.frames_per_second,
                "mb_per_second": info.mb_per_second,
                "queue_depth": info.queue_depth,
                "elapsed_seconds": info.elapsed_seconds,
                "eta_seconds": info.eta_seconds,
            }
    return Status(
        state=service_state(manager),
        version=__version__,
        data_dir=str(manager.data_dir),
        acquisition=info,
        **fields,
    )
