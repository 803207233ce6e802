"""The client's handling of what comes back: ids as one path segment, bodies it cannot read."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from stemdaq_client import (
    AsyncClient,
    Client,
    InvalidResponse,
    ServerError,
    StemdaqClientError,
)

ACQ = {
    "id": "a/b?c#d",
    "state": "armed",
    "file_path": "/data/x.nxs",
    "file_uri": "file:///data/x.nxs",
    "dataset_path": "/entry/data",
    "created_at": "2026-01-01T00:00:00+00:00",
}


def _transport(seen: list[bytes], body: Any = ACQ, **kwargs: Any) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        if "content" in kwargs:
            return httpx.Response(200, **kwargs)
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("acq_id", "encoded"),
    [
        ("a/b?c#d", b"a%2Fb%3Fc%23d"),
        ("..", b"%2E%2E"),
        ("x y%", b"x%20y%25"),
        ("20260101-000000-0001", b"20260101-000000-0001"),
    ],
)
def test_acquisition_ids_are_one_encoded_segment(acq_id: str, encoded: bytes) -> None:
    seen: list[bytes] = []
    with Client("http://stemdaq.test", token="", transport=_transport(seen)) as c:
        c.get(acq_id)
        c.stop(acq_id)
        c.abort(acq_id)
        c.metadata(acq_id)
    base = b"/api/v1/acquisitions/" + encoded
    assert seen == [base, base + b"/stop", base + b"/abort", base + b"/metadata"]


async def test_async_client_encodes_ids_too() -> None:
    seen: list[bytes] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(200, json=ACQ)

    async with AsyncClient(
        "http://stemdaq.test", token="", transport=httpx.MockTransport(handle)
    ) as c:
        await c.get("a/b")
        await c.abort("a/b")
    assert seen == [b"/api/v1/acquisitions/a%2Fb", b"/api/v1/acquisitions/a%2Fb/abort"]


def test_non_json_success_is_a_client_error() -> None:
    seen: list[bytes] = []
    html = _transport(
        seen, content=b"<html>proxy login</html>", headers={"content-type": "text/html"}
    )
    with Client("http://stemdaq.test", token="", transport=html) as c:
        with pytest.raises(InvalidResponse, match="expected JSON.*text/html.*proxy login") as err:
            c.status()
    assert isinstance(err.value, ServerError) and isinstance(err.value, StemdaqClientError)
    assert err.value.status == 200


@pytest.mark.parametrize("body", [{"id": 1}, [], "ok", None])
def test_body_not_matching_the_model_is_a_client_error(body: Any) -> None:
    seen: list[bytes] = []
    with Client("http://stemdaq.test", token="", transport=_transport(seen, body=body)) as c:
        with pytest.raises(InvalidResponse, match="not a valid Acquisition"):
            c.get("x")
        with pytest.raises(InvalidResponse):
            c.list()
        if not isinstance(body, dict):
            with pytest.raises(InvalidResponse):
                c.health()


async def test_async_invalid_bodies_are_client_errors() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            return httpx.Response(200, content=b"not json", headers={"content-type": "text/plain"})
        return httpx.Response(200, content=json.dumps({"state": "nope"}).encode())

    async with AsyncClient(
        "http://stemdaq.test", token="", transport=httpx.MockTransport(handle)
    ) as c:
        with pytest.raises(InvalidResponse, match="expected JSON"):
            await c.status()
        with pytest.raises(InvalidResponse, match="not a valid Acquisition"):
            await c.get("x")


def test_empty_id_is_refused_before_sending() -> None:
    seen: list[bytes] = []
    with Client("http://stemdaq.test", token="", transport=_transport(seen)) as c:
        with pytest.raises(StemdaqClientError):
            c.get("")
    assert seen == []
