"""The live view through a real uvicorn server, a real acquisition and a real ``stemdaq sim``:
WebSocket clients (one that never reads) follow the scan; what they assemble is the .npy."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from api.conftest import ServerThread
from conftest import SCAN, Sim, live_npy
from stemdaq.acquisition import Acquisition
from stemdaq.api.app import create_app
from stemdaq.live.stream import decode
from stemdaq.settings import Settings
from stemdaq_client import AcquisitionState, Client
from websockets.sync.client import connect

TOKEN = "ws-token"


@pytest.fixture
def server(deflecting_sim: Sim, tmp_path: Path) -> Iterator[ServerThread]:
    settings = Settings(
        data_dir=tmp_path,
        api={"token": TOKEN},
        acquisition={**deflecting_sim.live_config(), "live_update_hz": 20},
    )
    with ServerThread(create_app(settings, factory=Acquisition)) as srv:
        yield srv


def _silent_client(url: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"GET /api/v1/live/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in sock.recv(4096)
    return sock


def test_websocket_follows_a_real_scan(server: ServerThread) -> None:
    url = server.url
    silent = _silent_client(url)
    ws_url = url.replace("http://", "ws://") + "/api/v1/live/ws"
    maps: dict[str, np.ndarray[Any, Any]] = {}
    with connect(ws_url, open_timeout=10) as ws, Client(url, token=TOKEN) as c:
        acq = c.arm()
        final = c.wait(acq.id, timeout=60)
        assert final.state is AcquisitionState.COMPLETED, final.error
        header: dict[str, Any] = {}
        deadline = time.monotonic() + 30  # bounds a hang only
        while not (header.get("finished") and header.get("filled") == SCAN[0] * SCAN[1]):
            assert time.monotonic() < deadline, header
            header, data = decode(ws.recv(timeout=30))  # type: ignore[arg-type]
            assert header["acquisition_id"] == acq.id
            if header["full"]:
                maps = {n: np.full(SCAN, np.nan, np.float32) for n in header["maps"]}
            for i, name in enumerate(header["maps"]):
                maps[name][header["rows"]] = data[i]
        for name in ("bf", "adf", "total", "com_x", "com_y"):
            np.testing.assert_array_equal(maps[name], live_npy(url, name))
        assert np.isfinite(maps["adf"]).all()

        # a new annulus: the page's client gets every row again, recomputed
        before = maps["adf"].copy()
        r = httpx.put(
            f"{url}/api/v1/live/detectors",
            json={"adf_inner": 10.0, "adf_outer": 28.0},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        header, data = decode(ws.recv(timeout=30))  # type: ignore[arg-type]
        assert header["rows"] == list(range(SCAN[0])) and header["detectors"]["adf_outer"] == 28
        adf = data[header["maps"].index("adf")]
        np.testing.assert_array_equal(adf, live_npy(url, "adf"))
        assert not np.allclose(adf, before)
    silent.close()
