"""HTTP plumbing shared by the sync and async clients: paths, error mapping, SSE parsing."""

from __future__ import annotations

import os
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from stemdaq_client.errors import InvalidRequest, InvalidResponse, error_for
from stemdaq_client.models import Acquisition, Event

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get("STEMDAQ_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


_M = TypeVar("_M", bound=BaseModel)


def _acq_path(acq_id: str, action: str = "") -> str:
    """``/api/v1/acquisitions/<id>[/<action>]`` with the id percent-encoded as one segment."""
    if not isinstance(acq_id, str) or not acq_id:
        raise InvalidRequest(0, f"invalid acquisition id {acq_id!r}")
    segment = quote(acq_id, safe="")
    if segment in (".", ".."):  # would be removed as a dot-segment, not sent as an id
        segment = segment.replace(".", "%2E")
    return f"{API}/acquisitions/{segment}" + (f"/{action}" if action else "")


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:200] + ("..." if len(text) > 200 else "") if text else "(empty body)"


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            ctype = response.headers.get("content-type", "no content type")
            raise InvalidResponse(
                response.status_code,
                f"{_what(response)}: expected JSON, got {ctype}: {_snippet(response)}",
            ) from None
    try:
        body = response.json()
        detail = body.get("detail", response.text) if isinstance(body, dict) else response.text
    except ValueError:
        detail = response.text or response.reason_phrase
    raise error_for(response.status_code, detail if isinstance(detail, str) else str(detail))


def _what(response: httpx.Response) -> str:
    path = response.request.url.raw_path.decode("ascii", "replace")
    return f"{response.request.method} {path}"


def _model(model: type[_M], data: Any, response: httpx.Response) -> _M:
    """``data`` validated as ``model``; the client's own error if the server sent something else."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidResponse(
            response.status_code,
            f"{_what(response)}: the answer is not a valid {model.__name__}: {exc}",
        ) from None


class _JSONObject(BaseModel):
    """Any JSON object (``health``, ``metadata``): only checks that it is one."""

    model_config = {"extra": "allow"}


def _changes(changes: dict[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    body = dict(changes or {})
    body.update(kwargs)
    return body


def file_template_for(directory: str, file_name: str) -> str:
    """The ``file_template`` that names exactly ``<directory>/<file_name>`` (relative to the
    server's data directory; braces escaped, so no template field is filled in)."""
    path = f"{directory.strip('/')}/{file_name}" if directory.strip("/") else file_name
    return path.replace("{", "{{").replace("}", "}}")


def _wait_params(
    frames_written_ge: int | None, rows_written_ge: int | None, timeout: float
) -> dict[str, Any]:
    params: dict[str, Any] = {"timeout": timeout}
    if frames_written_ge is not None:
        params["frames_written_ge"] = frames_written_ge
    if rows_written_ge is not None:
        params["rows_written_ge"] = rows_written_ge
    return params


class _SSEParser:
    """Turns lines of a ``text/event-stream`` into :class:`Event` objects."""

    def __init__(self) -> None:
        self.kind = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            event = None
            if self.data:
                try:
                    acquisition = Acquisition.model_validate_json("\n".join(self.data))
                except ValidationError as exc:
                    self.kind, self.data = "message", []
                    raise InvalidResponse(200, f"event stream: invalid event data: {exc}") from None
                event = Event(event=self.kind, acquisition=acquisition)
            self.kind, self.data = "message", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self.kind = value
        elif field == "data":
            self.data.append(value)
        return None
