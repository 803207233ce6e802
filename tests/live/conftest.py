"""Fixtures of the live-view tests: a real ``stemdaq sim`` process with a known deflection."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from sim_cli import sim_cli
from stemdaq.live.geometry import Detectors
from stemdaq.sim.frames import FrameGenerator

SIMPLON = "/detector/api/1.8.0"
SCAN = (32, 32)
FRAME = (64, 64)
#: pixels of disk shift per scan step in x (columns) and y (rows)
DEFLECTION = (0.2, -0.15)
#: the geometry the tests pin (the generator's undeflected disk: centre 31.5, radius 8)
GEOMETRY = Detectors((31.5, 31.5), 9.0, 12.0, 24.0)


@dataclass
class Sim:
    rest_url: str
    stream_endpoint: str

    def generator(self) -> FrameGenerator:
        """The frames the simulator sends (seed 0, the same scan and deflection)."""
        return FrameGenerator(FRAME, "uint16", SCAN, 0, deflection=DEFLECTION)

    def live_config(self) -> dict[str, object]:
        return {
            "detector_url": self.rest_url,
            "stream_endpoint": self.stream_endpoint,
            "scan_shape": SCAN,
            "start_timeout": 20,
            "end_timeout": 5,
            "live_center": GEOMETRY.center,
            "live_bf_radius": GEOMETRY.bf_radius,
            "live_adf_inner": GEOMETRY.adf_inner,
            "live_adf_outer": GEOMETRY.adf_outer,
        }


def _sim(deflection: tuple[float, float]) -> Iterator[Sim]:
    with sim_cli() as (rest, stream):
        for key, value in (
            ("x_pixels_in_detector", FRAME[1]),
            ("y_pixels_in_detector", FRAME[0]),
            ("sim_deflection_x", deflection[0]),
            ("sim_deflection_y", deflection[1]),
        ):
            r = httpx.put(f"{rest}{SIMPLON}/config/{key}", json={"value": value}, timeout=10)
            r.raise_for_status()
        yield Sim(rest, stream)


@pytest.fixture
def deflecting_sim() -> Iterator[Sim]:
    """``stemdaq sim`` (a real process), 64x64 frames, deflecting the disk by DEFLECTION."""
    yield from _sim(DEFLECTION)


@pytest.fixture
def lattice_sim() -> Iterator[Sim]:
    """``stemdaq sim`` (a real process), 64x64 frames, the sample's own lattice of columns."""
    yield from _sim((0.0, 0.0))


def reference_maps(gen: FrameGenerator, det: Detectors) -> dict[str, np.ndarray]:
    """bf, adf, com_x, com_y of every frame the generator makes, in float64."""
    ny, nx = gen.frame_shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    cx, cy = det.center
    r = np.hypot(xx - cx, yy - cy)
    bf = r <= det.bf_radius
    adf = (r >= det.adf_inner) & (r < det.adf_outer)
    n = gen.n_positions
    out = {k: np.empty(n) for k in ("bf", "adf", "com_x", "com_y")}
    for i in range(n):
        f = gen.frame(i).astype(np.float64)
        t = f.sum()
        out["bf"][i] = f[bf].sum()
        out["adf"][i] = f[adf].sum()
        out["com_x"][i] = (f * (xx - cx)).sum() / t
        out["com_y"][i] = (f * (yy - cy)).sum() / t
    return {k: v.reshape(gen.scan_shape) for k, v in out.items()}


def expected_shift(gen: FrameGenerator) -> tuple[np.ndarray, np.ndarray]:
    """The deflection the simulator applied: (x, y) pixels per scan position, from the
    beam centre 31.5; the generator draws the disk at quarter-pixel steps (rounded down)."""
    n_m, n_k = gen.scan_shape
    m, k = np.mgrid[0:n_m, 0:n_k].astype(np.float64)
    cx = 31.5 + DEFLECTION[0] * (k - n_k / 2)
    cy = 31.5 + DEFLECTION[1] * (m - n_m / 2)
    return np.floor(cx * 4) / 4 - 31.5, np.floor(cy * 4) / 4 - 31.5


def live_npy(url: str, name: str) -> np.ndarray[Any, Any]:
    """``GET <url>/api/v1/live/<name>.npy`` as an array."""
    r = httpx.get(f"{url}/api/v1/live/{name}.npy", timeout=10)
    r.raise_for_status()
    return np.load(io.BytesIO(r.content))
