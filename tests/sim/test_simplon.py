"""SIMPLON REST subset over a real HTTP server on a free port."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from stemdaq.sim import SimulatedDetector

D = "/detector/api/1.8.0"
S = "/stream/api/1.8.0"


@pytest.fixture
def http(make_sim: Callable[..., SimulatedDetector]) -> httpx.Client:
    det = make_sim()
    client = httpx.Client(base_url=det.rest_url, timeout=5)
    client.det = det  # type: ignore[attr-defined]
    return client


def test_version_discovery(http: httpx.Client) -> None:
    assert http.get("/detector/api/version/").json() == {"value": "1.8.0", "value_type": "string"}


def test_config_get_body(http: httpx.Client) -> None:
    body = http.get(f"{D}/config/trigger_mode").json()
    assert (
        body["value"] == "ints" and body["value_type"] == "string" and body["access_mode"] == "rw"
    )
    assert body["allowed_values"] == ["exte", "exts", "inte", "ints"]
    body = http.get(f"{D}/config/count_time").json()
    assert body["value_type"] == "float" and body["unit"] == "s" and "min" in body
    assert http.get(f"{D}/config/x_pixels_in_detector").json()["value"] == 96
    keys = http.get(f"{D}/config/keys").json()
    assert {"nimages", "ntrigger", "compression", "bit_depth_image", "roi_mode"} <= set(keys)


def test_config_put_returns_changed_list(http: httpx.Client) -> None:
    assert http.put(f"{D}/config/nimages", json={"value": 16}).json() == ["nimages"]
    assert http.get(f"{D}/config/nimages").json()["value"] == 16
    changed = http.put(f"{D}/config/incident_energy", json={"value": 200000}).json()
    assert changed == ["incident_energy", "wavelength", "threshold_energy"]
    assert abs(http.get(f"{D}/config/wavelength").json()["value"] - 0.02508) < 1e-4
    changed = http.put(f"{D}/config/roi_mode", json={"value": "merge2x2"}).json()
    assert {"roi_mode", "x_pixels_in_detector", "y_pixels_in_detector"} <= set(changed)
    assert http.get(f"{D}/config/x_pixels_in_detector").json()["value"] == 48
    assert http.put(f"{D}/config/bit_depth_image", json={"value": 8}).json() == [
        "bit_depth_image",
        "bit_depth_readout",
    ]
    assert http.put(f"{D}/config/compression", json={"value": "lz4"}).json() == ["compression"]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("nimages", "ten"),
        ("nimages", 0),
        ("nimages", 1.5),
        ("nimages", True),
        ("trigger_mode", "auto"),
        ("compression", "zstd"),
        ("bit_depth_image", 12),
        ("count_time", "fast"),
        ("x_pixel_size", 1e-4),
    ],
)
def test_config_put_bad_value_is_400(http: httpx.Client, param: str, value: object) -> None:
    r = http.put(f"{D}/config/{param}", json={"value": value})
    assert r.status_code == 400 and r.json()["detail"]


def test_bad_bodies_and_unknown_params(http: httpx.Client) -> None:
    assert http.put(f"{D}/config/nimages", json={"val": 3}).status_code == 400
    assert http.put(f"{D}/config/nimages", content=b"{oops").status_code == 400
    assert http.get(f"{D}/config/flux_capacitor").status_code == 404
    assert http.put(f"{D}/config/flux_capacitor", json={"value": 1}).status_code == 404
    assert http.put(f"{D}/command/selfdestruct").status_code == 404
    assert http.get(f"{D}/status/nothing").status_code == 404
    assert http.get(f"{S}/config/nothing").status_code == 404


def test_commands_and_state_transitions(http: httpx.Client) -> None:
    def state() -> str:
        return http.get(f"{D}/status/state").json()["value"]

    assert state() == "idle"
    assert http.put(f"{D}/config/nimages", json={"value": 3}).status_code == 200
    http.put(f"{S}/config/mode", json={"value": "disabled"})  # nobody listens: don't block
    assert http.get(f"{S}/status/state").json()["value"] == "disabled"
    assert http.put(f"{D}/command/arm").json() == {"sequence id": 1}
    assert state() == "ready"
    assert http.put(f"{D}/command/arm").status_code == 400  # already armed
    assert http.put(f"{D}/command/trigger").status_code == 200
    http.det.wait_idle(5)  # type: ignore[attr-defined]
    assert state() == "idle"  # series complete: back to idle, end sent
    assert http.put(f"{D}/command/trigger").status_code == 400  # not armed
    assert http.put(f"{D}/command/disarm").json() == {"sequence id": 1}  # no-op when idle
    assert http.put(f"{D}/command/arm").json() == {"sequence id": 2}
    assert http.put(f"{D}/command/abort").json() == {"sequence id": 2}
    assert state() == "idle"
    assert http.put(f"{D}/command/arm").json() == {"sequence id": 3}
    assert http.put(f"{D}/command/cancel").json() == {"sequence id": 3}
    assert http.put(f"{D}/command/initialize").status_code == 200
    assert state() == "idle"
    assert http.get(f"{S}/status/dropped").json() == {
        "value": 0,
        "value_type": "uint",
        "access_mode": "r",
    }


def test_stream_config(http: httpx.Client) -> None:
    assert http.get(f"{S}/config/format").json()["value"] == "cbor"
    assert http.put(f"{S}/config/format", json={"value": "legacy"}).json() == ["format"]
    assert http.put(f"{S}/config/header_detail", json={"value": "all"}).json() == ["header_detail"]
    assert http.put(f"{S}/config/header_detail", json={"value": "most"}).status_code == 400
    bulk = {"mode": {"value": "enabled"}, "format": {"value": "cbor"}}
    assert http.put(f"{S}/config", json=bulk).json() == ["mode", "format"]
    assert http.get(f"{S}/status/state").json()["value"] == "ready"
    assert http.put(f"{S}/command/initialize").status_code == 200
    assert http.get(f"{S}/config/mode").json()["value"] == "disabled"


def test_threshold_channels(http: httpx.Client) -> None:
    assert http.get(f"{D}/config/threshold/2/mode").json()["value"] == "disabled"
    assert http.put(f"{D}/config/threshold/2/mode", json={"value": "enabled"}).json() == [
        "threshold/2/mode"
    ]
    assert http.put(f"{D}/config/threshold/1/mode", json={"value": "disabled"}).status_code == 400
    assert http.get(f"{D}/config/threshold/3/mode").status_code == 404
