"""Sync and async HTTP clients of the stemdaq service (httpx)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from pydantic import BaseModel

from stemdaq_client._http import (
    API,
    DEFAULT_URL,
    _acq_path,
    _changes,
    _check,
    _headers,
    _JSONObject,
    _model,
    _SSEParser,
    _wait_params,
    file_template_for,
)
from stemdaq_client.errors import StemdaqClientError, error_for
from stemdaq_client.models import Acquisition, AcquisitionPage, Config, Event, Flush, Status


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

    def _request(
        self, method: str, path: str, *, model: type[BaseModel] | None = None, **kwargs: Any
    ) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise error_for(0, f"cannot reach {self.url}: {exc}") from exc
        data = _check(response)
        return data if model is None else _model(model, data, response)

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        result: dict[str, Any] = self._request("GET", "/healthz", model=_JSONObject).model_dump()
        return result

    def status(self) -> Status:
        """Service state, current acquisition, rates."""
        return self._request("GET", f"{API}/status", model=Status)

    def get_config(self) -> Config:
        """The current acquisition config."""
        return self._request("GET", f"{API}/config", model=Config)

    def put_config(self, changes: dict[str, Any] | None = None, **kwargs: Any) -> Config:
        """Change config fields (others keep their value): ``put_config(scan_shape=[32, 32])``."""
        return self._request("PUT", f"{API}/config", json=_changes(changes, kwargs), model=Config)

    def arm(self, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Acquisition:
        """Arm an acquisition with per-acquisition overrides; returns its id and file path."""
        return self._request(
            "POST", f"{API}/acquisitions", json=_changes(overrides, kwargs), model=Acquisition
        )

    start = arm

    def stop(self, acq_id: str) -> Acquisition:
        """Finish on end-of-series (or timeout)."""
        return self._request("POST", _acq_path(acq_id, "stop"), model=Acquisition)

    def abort(self, acq_id: str) -> Acquisition:
        """Close the file now."""
        return self._request("POST", _acq_path(acq_id, "abort"), model=Acquisition)

    def get(self, acq_id: str) -> Acquisition:
        """One acquisition."""
        return self._request("GET", _acq_path(acq_id), model=Acquisition)

    def list(self, offset: int = 0, limit: int = 50) -> AcquisitionPage:
        """A page of the history, newest first."""
        params = {"offset": offset, "limit": limit}
        return self._request("GET", f"{API}/acquisitions", params=params, model=AcquisitionPage)

    def metadata(self, acq_id: str) -> dict[str, Any]:
        """The file's NeXus tree (``{"id", "file_path", "complete", "tree"}``)."""
        obj = self._request("GET", _acq_path(acq_id, "metadata"), model=_JSONObject)
        result: dict[str, Any] = obj.model_dump()
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

    def wait_written(
        self,
        acq_id: str,
        *,
        frames_written_ge: int | None = None,
        rows_written_ge: int | None = None,
        timeout: float = 10.0,
    ) -> Acquisition:
        """Long-poll until the counts are reached, the acquisition is final, or ``timeout`` s
        (at most 60) passed; the caller checks the counts of the answer."""
        params = _wait_params(frames_written_ge, rows_written_ge, timeout)
        return self._request(
            "GET",
            _acq_path(acq_id, "wait"),
            params=params,
            timeout=timeout + 10.0,
            model=Acquisition,
        )

    def flush(self, acq_id: str) -> Flush:
        """Make the frames written so far visible to SWMR readers (``flushed`` once done)."""
        return self._request("POST", _acq_path(acq_id, "flush"), model=Flush)

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

    async def _request(
        self, method: str, path: str, *, model: type[BaseModel] | None = None, **kwargs: Any
    ) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise error_for(0, f"cannot reach {self.url}: {exc}") from exc
        data = _check(response)
        return data if model is None else _model(model, data, response)

    async def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        obj = await self._request("GET", "/healthz", model=_JSONObject)
        result: dict[str, Any] = obj.model_dump()
        return result

    async def status(self) -> Status:
        """Service state, current acquisition, rates."""
        return await self._request("GET", f"{API}/status", model=Status)

    async def get_config(self) -> Config:
        """The current acquisition config."""
        return await self._request("GET", f"{API}/config", model=Config)

    async def put_config(self, changes: dict[str, Any] | None = None, **kwargs: Any) -> Config:
        """Change config fields (others keep their value)."""
        return await self._request(
            "PUT", f"{API}/config", json=_changes(changes, kwargs), model=Config
        )

    async def arm(self, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Acquisition:
        """Arm an acquisition with per-acquisition overrides."""
        body = _changes(overrides, kwargs)
        return await self._request("POST", f"{API}/acquisitions", json=body, model=Acquisition)

    start = arm

    async def stop(self, acq_id: str) -> Acquisition:
        """Finish on end-of-series (or timeout)."""
        return await self._request("POST", _acq_path(acq_id, "stop"), model=Acquisition)

    async def abort(self, acq_id: str) -> Acquisition:
        """Close the file now."""
        return await self._request("POST", _acq_path(acq_id, "abort"), model=Acquisition)

    async def get(self, acq_id: str) -> Acquisition:
        """One acquisition."""
        return await self._request("GET", _acq_path(acq_id), model=Acquisition)

    async def list(self, offset: int = 0, limit: int = 50) -> AcquisitionPage:
        """A page of the history, newest first."""
        params = {"offset": offset, "limit": limit}
        return await self._request(
            "GET", f"{API}/acquisitions", params=params, model=AcquisitionPage
        )

    async def metadata(self, acq_id: str) -> dict[str, Any]:
        """The file's NeXus tree."""
        obj = await self._request("GET", _acq_path(acq_id, "metadata"), model=_JSONObject)
        result: dict[str, Any] = obj.model_dump()
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

    async def wait_written(
        self,
        acq_id: str,
        *,
        frames_written_ge: int | None = None,
        rows_written_ge: int | None = None,
        timeout: float = 10.0,
    ) -> Acquisition:
        """Long-poll until the counts are reached, the acquisition is final, or ``timeout`` s."""
        params = _wait_params(frames_written_ge, rows_written_ge, timeout)
        return await self._request(
            "GET",
            _acq_path(acq_id, "wait"),
            params=params,
            timeout=timeout + 10.0,
            model=Acquisition,
        )

    async def flush(self, acq_id: str) -> Flush:
        """Make the frames written so far visible to SWMR readers."""
        return await self._request("POST", _acq_path(acq_id, "flush"), model=Flush)

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


__all__ = ["DEFAULT_URL", "AsyncClient", "Client", "StemdaqClientError", "file_template_for"]
