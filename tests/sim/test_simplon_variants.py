"""SIMPLON servers not shaped like the default simulator, and the client that copes with them.

The simulator's variants (SIMPLON 1.6 with stream v1 only; no ``GET /detector/api/version/``)
over real HTTP on free ports, and :class:`SimplonClient` negotiating with each: the API version
(and how it was found), which keys it sets and which stream format the detector will send.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sim_cli import sim_cli
from sim_wire import Puller, decode_v1_image, decode_v2
from stemdaq.detector import SimplonClient, SimplonVersionError
from stemdaq.errors import ConfigError, DetectorError
from stemdaq.sim import SimulatedDetector
from stemdaq.sim.server import RestServer

MakeSim = Callable[..., SimulatedDetector]

#: (simulator arguments, API version, how the client finds it, stream format it gets)
VARIANTS: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "default": ({}, "1.8.0", "version endpoint", "cbor"),
    "no-version-endpoint": ({"version_endpoint": False}, "1.8.0", "probed", "cbor"),
    "simplon-1.6": ({"simplon_version": "1.6.0"}, "1.6.0", "version endpoint", "legacy"),
    "simplon-1.6-no-version-endpoint": (
        {"simplon_version": "1.6.0", "version_endpoint": False},
        "1.6.0",
        "probed",
        "legacy",
    ),
}


def recording(client: SimplonClient) -> list[tuple[str, str]]:
    """Every (method, path) ``client`` sends from now on."""
    seen: list[tuple[str, str]] = []
    client._http.event_hooks["request"].append(
        lambda request: seen.append((request.method, request.url.path))
    )
    return seen


@pytest.fixture
def plain_server() -> Iterator[str]:
    """An HTTP server that is not a detector (no SIMPLON paths at all); its URL."""
    server = RestServer(FastAPI(), "127.0.0.1", 0)
    server.start()
    server.wait_started(10)
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


# -- the simulator's variants --------------------------------------------------------------------


def test_default_is_unchanged(make_sim: MakeSim) -> None:
    det = make_sim()
    with httpx.Client(base_url=det.rest_url, timeout=5) as http:
        assert http.get("/detector/api/version/").json()["value"] == "1.8.0"
        assert "format" in http.get("/stream/api/1.8.0/config/keys").json()
        assert http.get("/detector/api/1.6.0/status/state").status_code == 404
    assert det.stream_format == "cbor"


def test_no_version_endpoint_answers_404(make_sim: MakeSim) -> None:
    det = make_sim(version_endpoint=False)
    with httpx.Client(base_url=det.rest_url, timeout=5) as http:
        assert http.get("/detector/api/version/").status_code == 404
        assert http.get("/detector/api/version").status_code == 404
        assert http.get("/detector/api/1.8.0/status/state").json()["value"] == "idle"


def test_simplon_16_has_its_paths_and_no_stream_format(make_sim: MakeSim) -> None:
    det = make_sim(simplon_version="1.6.0")
    with httpx.Client(base_url=det.rest_url, timeout=5) as http:
        assert http.get("/detector/api/version/").json()["value"] == "1.6.0"
        assert http.get("/detector/api/1.6.0/status/state").json()["value"] == "idle"
        assert http.get("/detector/api/1.8.0/status/state").status_code == 404
        assert "nimages" in http.get("/detector/api/1.6.0/config/keys").json()
        keys = http.get("/stream/api/1.6.0/config/keys").json()
        assert "format" not in keys and {"mode", "header_detail"} <= set(keys)
        put = http.put("/stream/api/1.6.0/config/format", json={"value": "cbor"})
        assert put.status_code == 404
        assert http.get("/stream/api/1.6.0/config/format").status_code == 404
        bulk = http.put("/stream/api/1.6.0/config", json={"format": {"value": "cbor"}})
        assert bulk.status_code == 404
        assert http.put("/stream/api/1.6.0/config/mode", json={"value": "enabled"}).json() == [
            "mode"
        ]
    assert det.stream_format == "json"


def test_simplon_16_streams_v1_json_multipart(make_sim: MakeSim) -> None:
    det = make_sim(simplon_version="1.6.0", seed=5)
    puller = Puller(det.stream_endpoint)
    try:
        det.run_series(4)
        messages = puller.until_end(v2=False)
    finally:
        puller.close()
    header = json.loads(messages[0][0])
    assert header["htype"] == "dheader-1.0" and header["series"] == det.sequence_id
    images = [m for m in messages if b"dimage-1.0" in m[0][:40]]
    assert len(images) == 4
    for msg in images:
        head, frame = decode_v1_image(msg)
        np.testing.assert_array_equal(frame, det.generator.frame(head["frame"]))
    assert json.loads(messages[-1][0])["htype"] == "dseries_end-1.0"


def test_default_streams_v2(make_sim: MakeSim) -> None:
    det = make_sim(version_endpoint=False)
    puller = Puller(det.stream_endpoint)
    try:
        det.run_series(2)
        messages = puller.until_end()
    finally:
        puller.close()
    assert [decode_v2(m[0])["type"] for m in messages] == ["start", "image", "image", "end"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"simplon_version": "1.6.0", "fmt": "cbor"}, r"1\.6\.0 streams v1 only"),
        ({"simplon_version": "1.7.0"}, r"not one of \['1\.8\.0', '1\.6\.0'\]"),
        ({"fmt": "hdf5"}, r"stream format 'hdf5' not one of"),
    ],
)
def test_impossible_variants_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SimulatedDetector(**kwargs)


def test_sim_command_flags() -> None:
    """``stemdaq sim --simplon-version 1.6.0 --no-version-endpoint`` serves that variant."""
    with sim_cli("--simplon-version", "1.6.0", "--no-version-endpoint") as (rest, _):
        with SimplonClient(rest) as client:
            negotiated = client.configure_scan(3)
    assert (negotiated.api_version, negotiated.version_source) == ("1.6.0", "probed")
    assert negotiated.stream_format == "legacy"


def test_sim_command_refuses_cbor_on_16() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stemdaq.cli", "sim", "--rest-port", "0", "--stream-port", "0"]
        + ["--simplon-version", "1.6.0", "--format", "cbor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "streams v1 only" in result.stderr and "Traceback" not in result.stderr


# -- SimplonClient negotiating with each ---------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_client_negotiates(make_sim: MakeSim, variant: str) -> None:
    kwargs, version, source, fmt = VARIANTS[variant]
    det = make_sim(**kwargs)
    with SimplonClient(det.rest_url) as client:
        sent = recording(client)
        assert client.negotiated is None and client.stream_format is None
        negotiated = client.configure_scan(6)
        assert negotiated.api_version == version == client.version
        assert negotiated.version_source == source == client.version_source
        assert negotiated.stream_format == fmt == client.stream_format
        assert client.negotiated is negotiated
        assert client.arm() == det.sequence_id
        assert client.state() == "ready"
        client.abort()
    assert det.config["nimages"] == 6 and det.config["trigger_mode"] == "ints"
    puts = [path for method, path in sent if method == "PUT"]
    if fmt == "legacy":  # no format key: never touched
        assert not any(p.endswith("/config/format") for p in puts), puts
        assert negotiated.skipped_keys == ("stream/format",)
        assert negotiated.describe() == (
            f"SIMPLON 1.6.0 ({source}), stream v1 (legacy); "
            "not set (the detector has no such key): stream/format"
        )
    else:
        assert f"/stream/api/{version}/config/format" in puts
        assert negotiated.skipped_keys == ()
        assert negotiated.describe() == f"SIMPLON 1.8.0 ({source}), stream v2 (cbor)"
    # key lists are read once, whatever the number of scans configured
    client = SimplonClient(det.rest_url)
    sent = recording(client)
    client.configure_scan(2)
    client.configure_scan(3)
    client.close()
    key_reads = [path for _, path in sent if path.endswith(f"/api/{version}/config/keys")]
    assert key_reads == [
        f"/detector/api/{version}/config/keys",
        f"/stream/api/{version}/config/keys",
    ]


def test_version_endpoint_is_asked_first(make_sim: MakeSim) -> None:
    det = make_sim(simplon_version="1.6.0")
    with SimplonClient(det.rest_url) as client:
        sent = recording(client)
        assert client.version == "1.6.0"
    assert sent == [("GET", "/detector/api/version/")]


def test_probe_order_is_18_then_16(make_sim: MakeSim) -> None:
    det = make_sim(simplon_version="1.6.0", version_endpoint=False)
    with SimplonClient(det.rest_url) as client:
        sent = recording(client)
        assert client.version == "1.6.0"
    assert [path for _, path in sent] == [
        "/detector/api/version/",
        "/detector/api/1.8.0/config/keys",
        "/detector/api/1.8.0/status/state",
        "/detector/api/1.6.0/config/keys",
    ]


def test_configured_version_is_used_when_it_answers(make_sim: MakeSim) -> None:
    det = make_sim(simplon_version="1.6.0", version_endpoint=False)
    with SimplonClient(det.rest_url, simplon_version="1.6.0") as client:
        sent = recording(client)
        assert (client.version, client.version_source) == ("1.6.0", "configured")
        assert client.configure_scan(4).stream_format == "legacy"
    assert sent[0] == ("GET", "/detector/api/1.6.0/config/keys")
    assert ("GET", "/detector/api/version/") not in sent


def test_a_wrong_configured_version_falls_back_to_discovery(make_sim: MakeSim) -> None:
    det = make_sim(version_endpoint=False)
    with SimplonClient(det.rest_url, simplon_version="1.7.0") as client:
        assert (client.version, client.version_source) == ("1.8.0", "probed")


def test_no_simplon_api_names_what_was_tried(plain_server: str) -> None:
    with SimplonClient(plain_server) as client, pytest.raises(SimplonVersionError) as err:
        client.configure_scan(4)
    message = str(err.value)
    assert message.startswith(f"no SIMPLON API found at {plain_server}: tried ")
    for path in (
        "GET /detector/api/version/ (HTTP 404 Not Found)",
        "GET /detector/api/1.8.0/config/keys and status/state (HTTP 404 Not Found)",
        "GET /detector/api/1.6.0/config/keys and status/state (HTTP 404 Not Found)",
    ):
        assert path in message
    assert "set simplon_version" in message and "\n" not in message
    assert len(err.value.tried) == 3
    with SimplonClient(plain_server, simplon_version="1.7.0") as client:
        with pytest.raises(
            SimplonVersionError, match=r"Is simplon_version '1\.7\.0' right\?"
        ) as err:
            _ = client.version
    assert err.value.tried[0] == (
        "the configured version: "
        "GET /detector/api/1.7.0/config/keys and status/state (HTTP 404 Not Found)"
    )
    assert len(err.value.tried) == 4


def test_unreachable_is_not_a_version_problem() -> None:
    with SimplonClient("http://127.0.0.1:9", timeout=5) as client:
        with pytest.raises(DetectorError, match=r"^detector at .* unreachable") as err:
            _ = client.version
    assert not isinstance(err.value, SimplonVersionError)


def test_a_detector_without_key_lists_still_gets_configured() -> None:
    """Key lists 404: every key is tried; a 404 on stream ``format`` means stream v1."""
    app = FastAPI()
    puts: dict[str, Any] = {}

    @app.get("/detector/api/1.6.0/status/state")
    async def state() -> dict[str, str]:
        return {"value": "idle"}

    @app.put("/{module}/api/1.6.0/config/{key}")
    async def put(module: str, key: str, body: dict[str, Any]) -> list[str]:
        if key == "format":
            from fastapi import HTTPException

            raise HTTPException(404, "no such parameter")
        puts[f"{module}/{key}"] = body["value"]
        return [key]

    server = RestServer(app, "127.0.0.1", 0)
    server.start()
    try:
        server.wait_started(10)
        with SimplonClient(f"http://127.0.0.1:{server.port}") as client:
            negotiated = client.configure_scan(9)
    finally:
        server.stop()
    assert (negotiated.api_version, negotiated.version_source) == ("1.6.0", "probed")
    assert negotiated.stream_format == "legacy"
    assert negotiated.skipped_keys == ("stream/format",)
    assert puts == {
        "stream/mode": "enabled",
        "stream/header_detail": "basic",
        "detector/trigger_mode": "ints",
        "detector/ntrigger": 1,
        "detector/nimages": 9,
    }


def test_a_detector_without_nimages_is_refused() -> None:
    app = FastAPI()

    @app.get("/detector/api/version/")
    async def version() -> dict[str, str]:
        return {"value": "1.8.0"}

    @app.get("/detector/api/1.8.0/config/keys")
    async def keys() -> list[str]:
        return ["trigger_mode", "count_time"]

    server = RestServer(app, "127.0.0.1", 0)
    server.start()
    try:
        server.wait_started(10)
        with SimplonClient(f"http://127.0.0.1:{server.port}") as client:
            with pytest.raises(DetectorError, match=r"has no ntrigger, nimages in its config"):
                client.configure_scan(4)
    finally:
        server.stop()
