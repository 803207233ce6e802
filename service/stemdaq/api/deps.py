"""Dependencies of the routes: the manager, the settings, and the bearer-token checks."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stemdaq.manager import AcquisitionManager
from stemdaq.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="Token from STEMDAQ_API_TOKEN")


def get_settings(request: Request) -> Settings:
    """The settings ``create_app`` was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_manager(request: Request) -> AcquisitionManager:
    """The app's acquisition manager (created in the lifespan)."""
    manager: AcquisitionManager = request.app.state.manager
    return manager


SettingsDep = Annotated[Settings, Depends(get_settings)]
ManagerDep = Annotated[AcquisitionManager, Depends(get_manager)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    token = settings.token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token" if given else "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_token(settings: SettingsDep, credentials: Credentials) -> None:
    """Control endpoints: the bearer token, when one is configured."""
    _check(settings, credentials)


def require_read_token(settings: SettingsDep, credentials: Credentials) -> None:
    """Read endpoints: the bearer token only when ``api.protect_reads`` is set."""
    if settings.api.protect_reads:
        _check(settings, credentials)


ControlAuth = Depends(require_token)
ReadAuth = Depends(require_read_token)
