"""The live view of ``stemdaq serve --ranks 2``: the ranks' maps merged in the service's API.

Real processes: ``stemdaq sim`` deflecting the bright-field disk by a known amount per position,
``stemdaq serve --ranks 2`` with its ranks and fan. The maps the API serves (JSON, .npy, the
WebSocket) must hold every position, reproduce the known answer, follow a geometry change on
every rank, and equal what the master file took from the rank files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import h5py
import httpx
import numpy as np
import pytest
from sim_cli import sim_cli
from stemdaq.live.stream import decode
from stemdaq.sim.frames import FrameGenerator
from websockets.sync.client import connect

from .conftest import API, EVENT, RankedServe, ranked_serve, wait_for

SIMPLON = "/detector/api/1.8.0"
SCAN, FRAME = (8, 8), (64, 64)
DEFLECTION = (0.2, -0.15)  # disk shift per scan step in x (columns) and y (rows), pixels
CENTER, BF, INNER, OUTER = (31.5, 31.5), 9.0, 12.0, 24.0


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[str, str]]:
    with sim_cli("--frame-time", "0.001") as (rest, stream):  # paced: frame_time is obeyed
        for key, value in (
            ("x_pixels_in_detector", FRAME[1]),
            ("y_pixels_in_detector", FRAME[0]),
            ("sim_deflection_x", DEFLECTION[0]),
            ("sim_deflection_y", DEFLECTION[1]),
        ):
            r = httpx.put(f"{rest}{SIMPLON}/config/{key}", json={"value": value}, timeout=10)
            r.raise_for_status()
        yield rest, stream


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankedServe]:
    with ranked_serve(tmp_path_factory.mktemp("rlive") / "data", 2, 2) as s:
        yield s


def reference(gen: FrameGenerator) -> dict[str, np.ndarray]:
    """bf, com_x, com_y and the summed pattern of every frame the simulator sends (float64)."""
    ny, nx = gen.frame_shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    disk = np.hypot(xx - CENTER[0], yy - CENTER[1]) <= BF
    n = gen.n_positions
    out = {k: np.empty(n) for k in ("bf", "com_x", "com_y")}
    pattern = np.zeros(gen.frame_shape)
    for i in range(n):
        f = gen.frame(i).astype(np.float64)
        pattern += f
        out["bf"][i] = f[disk].sum()
        out["com_x"][i] = (f * (xx - CENTER[0])).sum() / f.sum()
        out["com_y"][i] = (f * (yy - CENTER[1])).sum() / f.sum()
    return {**{k: v.reshape(gen.scan_shape) for k, v in out.items()}, "sum_pattern": pattern}


def npy(serve: RankedServe, name: str) -> np.ndarray:
    r = httpx.get(f"{serve.url}{API}/live/{name}.npy", timeout=30)
    assert r.status_code == 200, r.text
    from io import BytesIO

    return np.load(BytesIO(r.content), allow_pickle=False)


def live(serve: RankedServe) -> dict[str, Any] | None:
    r = httpx.get(f"{serve.url}{API}/live", timeout=30)
    return r.json() if r.status_code == 200 else None


def test_ranked_scan_has_a_merged_live_view(serve: RankedServe, sim: tuple[str, str]) -> None:
    rest, stream = sim
    info = serve.arm(
        detector_url=rest,
        stream_endpoint=stream,
        scan_shape=list(SCAN),
        file_template="rlive.nxs",
        start_timeout=20,
        end_timeout=5,
        live_center=list(CENTER),
        live_bf_radius=BF,
        live_adf_inner=INNER,
        live_adf_outer=OUTER,
    )
    acq_id = info["id"]
    wait_for(lambda: live(serve), 60, "the live view to answer during the scan")
    final = serve.wait_final(acq_id)
    assert final["state"] == "completed", final.get("error")
    status = wait_for(
        lambda: (s := live(serve)) and s["finished"] and s,
        30,
        "the live view to be final",
    )
    assert status["acquisition_id"] == acq_id
    assert status["filled"] == status["positions"] == SCAN[0] * SCAN[1]
    assert status["filled_rows"] == [SCAN[1]] * SCAN[0]
    assert status["detectors"] == {
        "center": list(CENTER),
        "bf_radius": BF,
        "adf_inner": INNER,
        "adf_outer": OUTER,
    }

    # the known answer: as one process computes it, and the simulator's deflection
    gen = FrameGenerator(FRAME, "uint16", SCAN, 0, deflection=DEFLECTION)
    ref = reference(gen)
    maps = {name: npy(serve, name) for name in ("bf", "com_x", "com_y", "adf", "sum_pattern")}
    np.testing.assert_allclose(maps["bf"], ref["bf"], rtol=1e-5)
    np.testing.assert_allclose(maps["com_x"], ref["com_x"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps["com_y"], ref["com_y"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps["sum_pattern"], ref["sum_pattern"])
    m, k = np.mgrid[0 : SCAN[0], 0 : SCAN[1]].astype(np.float64)
    shift_x = np.floor((CENTER[0] + DEFLECTION[0] * (k - SCAN[1] / 2)) * 4) / 4 - CENTER[0]
    err = np.abs(maps["com_x"] - shift_x)
    assert err.mean() < 0.1 and err.max() < 0.5, (err.mean(), err.max())

    # the master file took the same maps from the rank files
    with h5py.File(final["file_path"], "r") as f:
        for name in ("bf", "com_x", "adf"):
            stored = f[f"{EVENT}/image_{name}/image_2d/intensity"][()]
            np.testing.assert_array_equal(stored, maps[name])

    # the WebSocket pushes the merged rows
    ws_url = serve.url.replace("http://", "ws://") + f"{API}/live/ws"
    with connect(ws_url, open_timeout=10) as ws:
        header, data = decode(ws.recv(timeout=30))  # type: ignore[arg-type]
    assert header["acquisition_id"] == acq_id and header["full"] and header["finished"]
    assert header["rows"] == list(range(SCAN[0])) and header["filled"] == SCAN[0] * SCAN[1]
    np.testing.assert_array_equal(data[list(header["maps"]).index("bf")], maps["bf"])  # type: ignore[arg-type]

    # a geometry change reaches every rank, and the maps follow it
    r = httpx.put(
        f"{serve.url}{API}/live/detectors", json={"adf_inner": 10, "adf_outer": 20}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert (r.json()["adf_inner"], r.json()["adf_outer"]) == (10, 20)
    after = live(serve)
    assert after is not None and after["detectors"]["adf_inner"] == 10
    assert after["detectors"]["adf_outer"] == 20 and after["version"] > status["version"]
    for rank in final["ranks"]:
        det = httpx.get(f"{rank['url']}/rank/live", timeout=10).json()["detectors"]
        assert (det["adf_inner"], det["adf_outer"]) == (10, 20), rank
    assert not np.array_equal(npy(serve, "adf"), maps["adf"]), "the ADF map was recomputed"

    # a refused change says which rank and changes nothing
    r = httpx.put(f"{serve.url}{API}/live/detectors", json={"adf_outer": 1000}, timeout=30)
    assert r.status_code == 422 and "rank 0" in r.text, r.text
    again = live(serve)
    assert again is not None and again["detectors"] == after["detectors"]
    assert again["geometry_refused"] == after["geometry_refused"] + 1
    # a rank takes a geometry only for the acquisition it holds
    url = final["ranks"][1]["url"]
    r = httpx.put(
        f"{url}/rank/live/detectors", params={"acquisition_id": "other/r01"}, json={}, timeout=10
    )
    assert r.status_code == 409 and f"{acq_id}/r01" in r.text, r.text


def test_ranks_take_rank_0s_geometry_when_it_is_found(
    serve: RankedServe, sim: tuple[str, str]
) -> None:
    """No geometry in the config: each rank finds one in its own first frames; the service
    gives them all rank 0's, so the merged maps (and the master's) use one geometry."""
    rest, stream = sim
    r = httpx.put(f"{rest}{SIMPLON}/config/frame_time", json={"value": 0.03}, timeout=10)
    r.raise_for_status()  # 64 frames in ~2 s: the ranks are compared while the scan runs
    info = serve.arm(
        detector_url=rest,
        stream_endpoint=stream,
        scan_shape=list(SCAN),
        file_template="found.nxs",
        start_timeout=20,
        end_timeout=5,
    )
    urls = [rank["url"] for rank in info["ranks"]]

    def aligned() -> bool:
        found = []
        for url in urls:
            resp = httpx.get(f"{url}/rank/live", timeout=10)
            if resp.status_code != 200 or resp.json()["included"] < 8:
                return False
            found.append(resp.json()["detectors"])
        return found[0] == found[1]

    wait_for(aligned, 60, "the ranks to share rank 0's geometry", period=0.1)
    final = serve.wait_final(info["id"])
    assert final["state"] == "completed", final.get("error")
    status = wait_for(lambda: (s := live(serve)) and s["finished"] and s, 30, "final maps")
    assert status["acquisition_id"] == info["id"] and status["filled"] == SCAN[0] * SCAN[1]
    rank0 = httpx.get(f"{urls[0]}/rank/live", timeout=10).json()["detectors"]
    assert status["detectors"] == rank0
    bf = npy(serve, "bf")
    with h5py.File(final["file_path"], "r") as f:
        np.testing.assert_array_equal(f[f"{EVENT}/image_bf/image_2d/intensity"][()], bf)
        assert f[f"{EVENT}/image_bf/live/bf_radius"][()] == rank0["bf_radius"]
