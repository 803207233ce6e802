"""One place that turns exceptions into HTTP answers: ``{"detail": "..."}``, never a bare 500."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from stemdaq.errors import (
    BusyError,
    ConfigError,
    DetectorError,
    NotFoundError,
    PathError,
    StemdaqError,
    StorageError,
    StreamError,
)

logger = logging.getLogger(__name__)

#: stemdaq error -> HTTP status, most specific first
STATUS_OF: tuple[tuple[type[StemdaqError], int], ...] = (
    (NotFoundError, 404),
    (BusyError, 409),
    (PathError, 422),
    (ConfigError, 422),
    (StreamError, 422),
    (StorageError, 507),
    (DetectorError, 502),
)


def status_of(exc: StemdaqError) -> int:
    """HTTP status for a stemdaq error (409 for anything else that is a refusal of state)."""
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status
    return 409


async def stemdaq_error_handler(request: Request, exc: StemdaqError) -> JSONResponse:
    """Map the :mod:`stemdaq.errors` hierarchy to 4xx/502."""
    status = status_of(exc)
    logger.info("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Request validation: one readable line per field, plus the structured list."""
    errors = exc.errors()
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "(body)"
        lines.append(f"{loc}: {err.get('msg', 'invalid')}")
    detail = "invalid request: " + "; ".join(lines)
    return JSONResponse({"detail": detail, "errors": _jsonable(errors)}, status_code=422)


_MAX_ECHO = 200  # characters of a refused input echoed back (a 20 MB title is not)


def _jsonable(errors: object) -> object:
    from fastapi.encoders import jsonable_encoder

    if isinstance(errors, list | tuple):
        errors = [_shorten(e) for e in errors]
    try:
        return jsonable_encoder(errors)
    except Exception:  # an input that cannot be echoed back: leave it out
        return []


def _shorten(err: object) -> object:
    """One validation error whose ``input`` is JSON (NaN and infinity are not: shown as text)
    and short (a long one is cut to its start and its length)."""
    if not isinstance(err, dict) or "input" not in err:
        return err
    value = err["input"]
    try:
        text = json.dumps(value, allow_nan=False, default=repr)
    except (ValueError, TypeError):
        return {**err, "input": repr(value)[:_MAX_ECHO]}
    if len(text) <= _MAX_ECHO:
        return err
    return {**err, "input": f"{text[:_MAX_ECHO]}... ({len(text)} characters)"}


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(StemdaqError, stemdaq_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
