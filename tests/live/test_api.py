"""The live routes and the WebSocket with Starlette's test client (an engine fed directly)."""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.websockets import WebSocketDisconnect
from stemdaq.api.app import create_app
from stemdaq.config import AcquisitionConfig
from stemdaq.live.stream import decode
from stemdaq.models import Codec, Frame
from stemdaq.settings import Settings
from stemdaq.sim.frames import FrameGenerator
from stemdaq.writer.summary import SummaryAccumulator

# Starlette 1.x would rather drive its test client with httpx2, which is not installed
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

TOKEN = "live-token"
SCAN = (4, 6)
SHAPE = (32, 32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _frames(gen: FrameGenerator, positions: range) -> list[tuple[int, Frame]]:
    return [
        (p, Frame(1, p, "threshold_1", SHAPE, "uint16", Codec.RAW, gen.frame(p).tobytes()))
        for p in positions
    ]


def _feed(acc: SummaryAccumulator, gen: FrameGenerator, positions: range) -> None:
    for p, frame in _frames(gen, positions):
        assert acc.offer(p, frame)
    deadline = 2000
    while acc.included < positions.stop and deadline:  # the summary thread takes them
        time.sleep(0.01)
        deadline -= 1
    assert acc.included == positions.stop


@pytest.fixture
def live_app(tmp_path: Path) -> Iterator[tuple[TestClient, SummaryAccumulator, FrameGenerator]]:
    settings = Settings(
        data_dir=tmp_path, api={"token": TOKEN}, acquisition={"stream_endpoint": "fake://"}
    )
    app = create_app(settings)
    acc = SummaryAccumulator(SCAN, SHAPE, "uint16", cpu_share=1.0)
    gen = FrameGenerator(SHAPE, "uint16", SCAN, seed=3)
    config = AcquisitionConfig(stream_endpoint="fake://", scan_shape=SCAN, scan_step=(2.0, 2.0))
    # the hub learns acquisitions from the factory it wraps: build one that is this engine
    app.state.live.wrap(lambda *a, **k: SimpleNamespace(summary=acc))(
        config, tmp_path / "x.nxs", acq_id="acq-1"
    )
    with TestClient(app) as client:
        yield client, acc, gen
    acc.finish()


def test_no_live_view_before_a_frame(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, acquisition={"stream_endpoint": "fake://"}))
    with TestClient(app) as client:
        assert client.get("/api/v1/live").status_code == 404
        assert client.get("/api/v1/live/bf.png").status_code == 404
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()


def test_maps_as_npy_png_and_status(live_app: Any) -> None:
    client, acc, gen = live_app
    _feed(acc, gen, range(0, 12))  # two of four rows
    status = client.get("/api/v1/live").json()
    assert status["acquisition_id"] == "acq-1" and status["scan_shape"] == list(SCAN)
    assert status["filled"] == 12 and status["filled_rows"] == [6, 6, 0, 0]
    assert status["scan_step"] == [2.0, 2.0] and status["scan_unit"] == "nm"
    assert set(status["maps"]) >= {"bf", "adf", "total", "com_x", "com_y", "sum_pattern"}
    for name in ("bf", "adf", "total", "com_x", "com_y"):
        r = client.get(f"/api/v1/live/{name}.npy")
        assert r.status_code == 200
        arr = np.load(io.BytesIO(r.content))
        assert arr.shape == SCAN and arr.dtype == np.float32
        np.testing.assert_array_equal(arr, acc.maps.images()[name])
        assert np.isfinite(arr[:2]).all() and np.isnan(arr[2:]).all(), "unfilled = NaN"
    pattern = np.load(io.BytesIO(client.get("/api/v1/live/sum_pattern.npy").content))
    expect = sum(gen.frame(p).astype(np.float64) for p in range(12))
    np.testing.assert_array_equal(pattern, expect)
    png = client.get("/api/v1/live/adf.png")
    assert png.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(png.content))
    assert img.size == (SCAN[1], SCAN[0]) and img.mode == "RGB"
    assert img.getpixel((0, 3)) == (40, 40, 40), "not filled: dark grey"
    assert Image.open(io.BytesIO(client.get("/api/v1/live/sum_pattern.png").content)).size == SHAPE
    assert client.get("/api/v1/live/nope.npy").status_code == 404
    assert client.get("/api/v1/live/nope.png").status_code == 404


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ('{"center": [500, 3]}', "outside"),
        ('{"adf_inner": 9, "adf_outer": 4}', "smaller"),
        ('{"bf_radius": NaN}', ""),
        ('{"bf_radius": -2}', ""),
        ('{"center": "middle"}', ""),
        ("not json", ""),
    ],
)
def test_bad_geometry_is_refused(live_app: Any, body: str, what: str) -> None:
    client, acc, gen = live_app
    _feed(acc, gen, range(0, 6))
    before = acc.detectors
    r = client.put(
        "/api/v1/live/detectors",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert what in r.text
    assert acc.detectors == before
    if what == "outside":  # refused by the frame check (not the body schema): counted
        assert client.get("/api/v1/live").json()["geometry_refused"] == 1


def test_geometry_change_needs_the_token_and_recomputes(live_app: Any) -> None:
    client, acc, gen = live_app
    _feed(acc, gen, range(0, 24))
    body = {"adf_inner": 6.0, "adf_outer": 14.0}
    assert client.put("/api/v1/live/detectors", json=body).status_code == 401
    adf0 = acc.maps.images()["adf"]
    r = client.put("/api/v1/live/detectors", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["adf_inner"] == 6.0 and r.json()["adf_outer"] == 14.0
    assert client.get("/api/v1/live").json()["detectors"]["adf_outer"] == 14.0
    adf1 = np.load(io.BytesIO(client.get("/api/v1/live/adf.npy").content))
    assert not np.allclose(adf0, adf1), "the maps were recomputed at once"
    config = client.get("/api/v1/config").json()
    assert config["live_adf_inner"] == 6.0, "kept for the next acquisition"


def test_websocket_sends_changed_rows_only(live_app: Any) -> None:
    client, acc, gen = live_app
    _feed(acc, gen, range(0, 12))  # past AUTO_FRAMES: the geometry is found, then stays
    with client.websocket_connect("/api/v1/live/ws") as ws:
        header, data = decode(ws.receive_bytes())
        assert header["full"] is True and header["acquisition_id"] == "acq-1"
        assert header["rows"] == [0, 1, 2, 3] and data.shape == (6, 4, 6)
        assert header["filled"] == 12 and header["positions"] == 24
        bf = header["maps"].index("bf")  # type: ignore[union-attr]
        np.testing.assert_array_equal(data[bf], acc.maps.images()["bf"])
        _feed(acc, gen, range(12, 18))  # row 2
        header, data = decode(ws.receive_bytes())
        assert header["full"] is False and header["rows"] == [2]
        np.testing.assert_array_equal(data[bf][0], acc.maps.images()["bf"][2])


def test_websocket_takes_the_token_when_reads_are_protected(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        api={"token": TOKEN, "protect_reads": True},
        acquisition={"stream_endpoint": "fake://"},
    )
    with TestClient(create_app(settings)) as client:
        with pytest.raises(WebSocketDisconnect) as err:
            with client.websocket_connect("/api/v1/live/ws") as ws:
                ws.receive_bytes()
        assert err.value.code == 1008
        with client.websocket_connect(f"/api/v1/live/ws?token={TOKEN}") as ws:
            ws.close()
        assert client.get("/api/v1/live").status_code == 401


def test_a_change_that_empties_the_annulus_with_the_kept_values_is_refused(live_app: Any) -> None:
    client, acc, gen = live_app
    _feed(acc, gen, range(0, 12))
    r = client.put("/api/v1/live/detectors", json={"adf_outer": 9.0}, headers=AUTH)
    assert r.status_code == 200, r.text
    before = acc.detectors
    r = client.put("/api/v1/live/detectors", json={"adf_inner": 12.0}, headers=AUTH)
    assert r.status_code == 422 and "adf_inner" in r.text, r.text
    assert acc.detectors == before
    assert client.get("/api/v1/config").json()["live_adf_inner"] is None, "nothing changed"


def test_the_engine_refuses_an_annulus_emptied_by_its_own_values() -> None:
    from stemdaq.errors import ConfigError
    from stemdaq.live.geometry import DetectorsRequest

    config = AcquisitionConfig(stream_endpoint="fake://", live_adf_outer=10.0)
    acc = SummaryAccumulator(SCAN, SHAPE, "uint16", cpu_share=1.0, config=config)
    try:
        with pytest.raises(ConfigError, match="adf_inner"):
            acc.set_detectors(DetectorsRequest(adf_inner=20.0))
        assert acc.detectors.adf_outer == 10.0
    finally:
        acc.finish()


def test_geometry_before_any_scan_goes_to_the_config(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, acquisition={"stream_endpoint": "fake://"})
    with TestClient(create_app(settings)) as client:
        r = client.put("/api/v1/live/detectors", json={"bf_radius": 11.0})
        assert r.status_code == 200, r.text
        assert r.json() == {"center": None, "bf_radius": 11.0, "adf_inner": None, "adf_outer": None}
        assert client.get("/api/v1/config").json()["live_bf_radius"] == 11.0
