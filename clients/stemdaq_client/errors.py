"""Exceptions of the client: one per kind of answer, each with ``status`` and ``detail``."""

from __future__ import annotations


class StemdaqClientError(Exception):
    """Any error answer from the server (or no answer at all: ``status`` 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


class InvalidRequest(StemdaqClientError, ValueError):  # noqa: N818 - HTTP status names
    """400/422: a bad value, e.g. an invalid config or a file name outside the data directory."""


class Unauthorized(StemdaqClientError, PermissionError):  # noqa: N818 - HTTP status names
    """401/403: the bearer token is missing or wrong."""


class NotFound(StemdaqClientError, LookupError):  # noqa: N818 - HTTP status names
    """404: no such acquisition."""


class Conflict(StemdaqClientError, RuntimeError):  # noqa: N818 - HTTP status names
    """409: an acquisition is already running (or the file is not readable yet)."""


class ServerError(StemdaqClientError, RuntimeError):
    """5xx, e.g. 502 when the detector refused, or the server cannot be reached (status 0)."""


class InvalidResponse(ServerError, ValueError):  # noqa: N818 - parallels InvalidRequest
    """A success status whose body is not the expected JSON (not JSON, or not the model).

    ``status`` is the HTTP status of that answer; ``detail`` says what was wrong with it.
    """


def error_for(status: int, detail: str) -> StemdaqClientError:
    """The exception for an HTTP error status."""
    if status in (400, 422):
        return InvalidRequest(status, detail)
    if status in (401, 403):
        return Unauthorized(status, detail)
    if status == 404:
        return NotFound(status, detail)
    if status == 409:
        return Conflict(status, detail)
    if status >= 500 or status == 0:
        return ServerError(status, detail)
    return StemdaqClientError(status, detail)
