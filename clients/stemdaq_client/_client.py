"""Sync and async HTTP clients of the stemdaq service (httpx)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from stemdaq_client.errors import StemdaqClientError, error_for
from stemdaq_client.models import Acquisition, AcquisitionPage, Config, Event, Status

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get("STEMDAQ_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
        detail = body.get("detail", response.text) if isinstance(body, dict) else response.text
    except ValueError:
        detail = response.text or response.reason_phrase
    raise error_for(response.status_code, detail if isinstance(detail, str) else str(detail))


def _changes(changes: dict[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    body = dict(changes or {})
    body.update(kwargs)
    return body


class _SSEParser:
    """Turns lines of a ``text/event-stream`` into :class:`Event` objects."""

    def __init__(self) -> None:
        self.kind = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            event = None
            if self.data:
                event = Event(
                    event=self.kind,
                    acquisition=Acquisition.model_validate_json("\n".join(self.data)),
                )
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


class Client:
    """Blocking client.

    Parameters
    ----------
    url
        Server base URL (default env ``STEMDAQ_URL`` or http://127.0.0.1:8000).
    token
        Bearer token for control calls (default env ``STEMDAQ_API_TOKEN``).
    timeout
        Seconds per request.

    Examples
    --------
    >>> with Client("http://127.0.0.1:8000") as c:  # doctest: +SKIP
    ...     acq = c.arm(scan_shape=[64, 64])
    ...     c.wait(acq.id, timeout=60).frames_written
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("STEMDAQ_URL") or DEFAULT_URL).rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=_headers(token), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise error_for(0, f"cannot reach {self.url}: {exc}") from exc
        return _check(response)

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        result: dict[str, Any] = self._request("GET", "/healthz")
        return result

    def status(self) -> Status:
        """Service state, current acquisition, rates."""
        return Status.model_validate(self._request("GET", f"{API}/status"))

    def get_config(self) -> Config:
        """The current acquisition config."""
        return Config.model_validate(self._request("GET", f"{API}/config"))

    def put_config(self, changes: dict[str, Any] | None = None, **kwargs: Any) -> Config:
        """Change config fields (others keep their value): ``put_config(scan_shape=[32, 32])``."""
        return Config.model_validate(
            self._request("PUT", f"{API}/config", json=_changes(changes, kwargs))
        )

    def arm(self, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Acquisition:
        """Arm an acquisition with per-acquisition overrides; returns its id and file path."""
        return Acquisition.model_validate(
            self._request("POST", f"{API}/acquisitions", json=_changes(overrides, kwargs))
        )

    start = arm

    def stop(self, acq_id: str) -> Acquisition:
        """Finish on end-of-series (or timeout)."""
        return Acquisition.model_validate(
            self._request("POST", f"{API}/acquisitions/{acq_id}/stop")
        )

    def abort(self, acq_id: str) -> Acquisition:
        """Close the file now."""
        return Acquisition.model_validate(
            self._request("POST", f"{API}/acquisitions/{acq_id}/abort")
        )

    def get(self, acq_id: str) -> Acquisition:
        """One acquisition."""
        return Acquisition.model_validate(self._request("GET", f"{API}/acquisitions/{acq_id}"))

    def list(self, offset: int = 0, limit: int = 50) -> AcquisitionPage:
        """A page of the history, newest first."""
        params = {"offset": offset, "limit": limit}
        return AcquisitionPage.model_validate(
            self._request("GET", f"{API}/acquisitions", params=params)
        )

    def metadata(self, acq_id: str) -> dict[str, Any]:
        """The file's NeXus tree (``{"id", "file_path", "complete", "tree"}``)."""
        result: dict[str, Any] = self._request("GET", f"{API}/acquisitions/{acq_id}/metadata")
        return result

    def events(self, *, timeout: float | None = None) -> Iterator[Event]:
        """Follow the server-sent events until the server closes the stream."""
        parser = _SSEParser()
        try:
            with self._http.stream(
                "GET", f"{API}/events", timeout=httpx.Timeout(30.0, read=timeout)
            ) as r:
                if not r.is_success:
                    r.read()
                    _check(r)
                for line in r.iter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.TransportError as exc:
            raise error_for(0, f"event stream from {self.url} broken: {exc}") from exc

    def wait(self, acq_id: str, timeout: float | None = None, *, poll: float = 0.2) -> Acquisition:
        """Poll until the acquisition is final; raises ``TimeoutError`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            acq = self.get(acq_id)
            if acq.state.is_final:
                return acq
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"acquisition {acq_id} still {acq.state.value} after {timeout} s"
                )
            time.sleep(poll)


class AsyncClient:
    """Asyncio client; same methods as :class:`Client`, awaited."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("STEMDAQ_URL") or DEFAULT_URL).rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(token), timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise error_for(0, f"cannot reach {self.url}: {exc}") from exc
        return _check(response)

    async def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        result: dict[str, Any] = await self._request("GET", "/healthz")
        return result

    async def status(self) -> Status:
        """Service state, current acquisition, rates."""
        return Status.model_validate(await self._request("GET", f"{API}/status"))

    async def get_config(self) -> Config:
        """The current acquisition config."""
        return Config.model_validate(await self._request("GET", f"{API}/config"))

    async def put_config(self, changes: dict[str, Any] | None = None, **kwargs: Any) -> Config:
        """Change config fields (others keep their value)."""
        return Config.model_validate(
            await self._request("PUT", f"{API}/config", json=_changes(changes, kwargs))
        )

    async def arm(self, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Acquisition:
        """Arm an acquisition with per-acquisition overrides."""
        body = _changes(overrides, kwargs)
        return Acquisition.model_validate(
            await self._request("POST", f"{API}/acquisitions", json=body)
        )

    start = arm

    async def stop(self, acq_id: str) -> Acquisition:
        """Finish on end-of-series (or timeout)."""
        return Acquisition.model_validate(
            await self._request("POST", f"{API}/acquisitions/{acq_id}/stop")
        )

    async def abort(self, acq_id: str) -> Acquisition:
        """Close the file now."""
        return Acquisition.model_validate(
            await self._request("POST", f"{API}/acquisitions/{acq_id}/abort")
        )

    async def get(self, acq_id: str) -> Acquisition:
        """One acquisition."""
        return Acquisition.model_validate(
            await self._request("GET", f"{API}/acquisitions/{acq_id}")
        )

    async def list(self, offset: int = 0, limit: int = 50) -> AcquisitionPage:
        """A page of the history, newest first."""
        params = {"offset": offset, "limit": limit}
        return AcquisitionPage.model_validate(
            await self._request("GET", f"{API}/acquisitions", params=params)
        )

    async def metadata(self, acq_id: str) -> dict[str, Any]:
        """The file's NeXus tree."""
        result: dict[str, Any] = await self._request("GET", f"{API}/acquisitions/{acq_id}/metadata")
        return result

    async def events(self, *, timeout: float | None = None) -> AsyncIterator[Event]:
        """Follow the server-sent events until the server closes the stream."""
        parser = _SSEParser()
        try:
            async with self._http.stream(
                "GET", f"{API}/events", timeout=httpx.Timeout(30.0, read=timeout)
            ) as r:
                if not r.is_success:
                    await r.aread()
                    _check(r)
                async for line in r.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.TransportError as exc:
            raise error_for(0, f"event stream from {self.url} broken: {exc}") from exc

    async def wait(
        self, acq_id: str, timeout: float | None = None, *, poll: float = 0.2
    ) -> Acquisition:
        """Poll until the acquisition is final; raises ``TimeoutError`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            acq = await self.get(acq_id)
            if acq.state.is_final:
                return acq
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"acquisition {acq_id} still {acq.state.value} after {timeout} s"
                )
            await asyncio.sleep(poll)


__all__ = ["Client", "AsyncClient", "StemdaqClientError", "DEFAULT_URL"]
