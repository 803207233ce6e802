"""``stemdaq acquire --detector`` against SIMPLON servers not shaped like the default simulator.

Real processes, sockets and files: the simulator in each variant (SIMPLON 1.6 streaming v1 only,
no ``GET /detector/api/version/``) on loopback, ``stemdaq acquire`` as a process in active
mode, the HDF5 file read back and compared with the simulator's frames bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from sim_cli import sim_cli
from stemdaq.sim import FrameGenerator
from stemdaq.sim.server import RestServer

from .test_sim_to_file import expected_frame, read_frames

STEMDAQ = [sys.executable, "-m", "stemdaq.cli"]
SCAN = (4, 4)

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-version-endpoint": {"version_endpoint": False},
    "simplon-1.6": {"simplon_version": "1.6.0"},
    "simplon-1.6-no-version-endpoint": {"simplon_version": "1.6.0", "version_endpoint": False},
}


def acquire(rest: str, stream: str, out: Path) -> subprocess.CompletedProcess[str]:
    """``stemdaq acquire --detector REST --stream STREAM --scan 4x4 --out OUT``."""
    return subprocess.run(
        [*STEMDAQ, "acquire", "--detector", rest, "--stream", stream, "--scan", "4x4"]
        + ["--timeout", "20", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )


def assert_frames(out: Path, expected: list[np.ndarray]) -> None:
    data, written = read_frames(out)
    assert data.shape[:2] == SCAN and written.all()
    for i, frame in enumerate(expected):
        np.testing.assert_array_equal(data[i // SCAN[1], i % SCAN[1]], frame, err_msg=f"frame {i}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_active_mode_records_every_frame(make_sim, tmp_path: Path, variant: str) -> None:
    sim = make_sim(seed=7, **VARIANTS[variant])
    out = tmp_path / "scan.nxs"
    result = acquire(sim.rest_url, sim.stream_endpoint, out)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert sim.sequence_id == 1 and sim.config["nimages"] == 16
    assert_frames(out, [expected_frame(sim, i) for i in range(16)])


@pytest.fixture
def sim_process() -> Iterator[tuple[str, str]]:
    """``stemdaq sim --simplon-version 1.6.0 --no-version-endpoint`` on free ports."""
    with sim_cli("--seed", "11", "--simplon-version", "1.6.0", "--no-version-endpoint") as urls:
        yield urls


def test_active_mode_against_the_sim_command(sim_process: tuple[str, str], tmp_path: Path):
    rest, stream = sim_process
    out = tmp_path / "scan.nxs"
    result = acquire(rest, stream, out)
    assert result.returncode == 0, result.stderr + result.stdout
    # the command's frames: 96x96 uint16, seed 11, sample scan 4x4 for a 16-frame series
    generator = FrameGenerator((96, 96), "uint16", SCAN, seed=11)
    assert_frames(out, [generator.frame(i) for i in range(16)])


def test_no_simplon_api_is_one_readable_error(make_sim, tmp_path: Path) -> None:
    """A detector URL that answers neither the version endpoint nor known versioned paths."""
    sim = make_sim()  # only its stream: the endpoint must accept connections
    server = RestServer(FastAPI(), "127.0.0.1", 0)
    server.start()
    try:
        server.wait_started(10)
        url = f"http://127.0.0.1:{server.port}"
        out = tmp_path / "scan.nxs"
        result = acquire(url, sim.stream_endpoint, out)
    finally:
        server.stop()
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: no SIMPLON API found at {url}: tried ")
    for tried in (
        "GET /detector/api/version/ (HTTP 404 Not Found)",
        "GET /detector/api/1.8.0/config/keys and status/state (HTTP 404 Not Found)",
        "GET /detector/api/1.6.0/config/keys and status/state (HTTP 404 Not Found)",
    ):
        assert tried in errors[0]
    assert list(tmp_path.iterdir()) == []  # no file, no .partial
    assert sim.sequence_id == 0  # the simulator was never armed
