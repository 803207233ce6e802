"""``GET``/``PUT /api/v1/config``: the acquisition config the next arm starts from."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from stemdaq.api.deps import ControlAuth, ManagerDep, ReadAuth
from stemdaq.api.schemas import ErrorResponse
from stemdaq.config import AcquisitionConfig

router = APIRouter(prefix="/config", tags=["config"])


@router.get("", response_model=AcquisitionConfig, dependencies=[ReadAuth])
async def get_config(manager: ManagerDep) -> AcquisitionConfig:
    """The current acquisition config."""
    return manager.config


@router.put(
    "",
    response_model=AcquisitionConfig,
    dependencies=[ControlAuth],
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
async def put_config(
    manager: ManagerDep,
    changes: Annotated[
        AcquisitionConfig,
        Body(description="Fields to change; fields not given keep their current value"),
    ],
) -> AcquisitionConfig:
    """Change the acquisition config (stream, SIMPLON URL, scan, file template, compression...).

    Only the fields in the body change. A file template that would leave the data directory,
    or any bad value, answers 422 and changes nothing.
    """
    return await manager.update_config(changes.model_dump(exclude_unset=True))
