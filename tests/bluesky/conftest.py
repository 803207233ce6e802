"""Fixtures of the bluesky tests: ``stemdaq sim`` and ``stemdaq serve`` as real processes on
loopback, a RunEngine that keeps every document it emits."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pytest
from sim_cli import sim_cli

pytest.importorskip("ophyd_async")
pytest.importorskip("bluesky")

SEED = 7
FRAME_SHAPE = (96, 96)


@dataclass
class Service:
    """A running ``stemdaq serve``: its URL and data directory."""

    url: str
    data_dir: Path


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[str, str]]:
    """``stemdaq sim`` paced at 3 ms a frame, so an abort lands mid-scan."""
    with sim_cli("--seed", str(SEED), "--frame-shape", "96x96", "--frame-time", "0.003") as ports:
        yield ports


@pytest.fixture(scope="module")
def service(sim: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``stemdaq serve --port 0`` in active mode against the simulator."""
    root = tmp_path_factory.mktemp("bluesky")
    data_dir = root / "data"
    config = root / "stemdaq.yaml"
    rest, stream = sim
    config.write_text(
        "acquisition:\n"
        f"  detector_url: {rest}\n"
        f"  stream_endpoint: {stream}\n"
        "  is_simulation: true\n"
        "  start_timeout: 10\n"
        "  end_timeout: 3\n"
        "  summary: false\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stemdaq.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            lines.append(line)
            if m := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line):
                url = m[1]
                break
        if not url:
            raise AssertionError("stemdaq serve did not start:\n" + "".join(lines))
        # keep reading its log so the pipe never fills
        threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True).start()
        yield Service(url, data_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def run_engine() -> Iterator[Any]:
    """A RunEngine (no signal handlers: it may run in a worker thread)."""
    from bluesky import RunEngine

    re_ = RunEngine({}, context_managers=[])
    yield re_
    if re_.state != "idle":
        re_.halt()


@pytest.fixture
def make_detector(service: Service, run_engine: Any) -> Iterator[Any]:
    """``make_detector(scan_shape, subdir)`` -> a connected StemdaqDetector writing into
    ``<data>/<subdir>`` with UUID file names."""
    from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices
    from stemdaq_client.ophyd import StemdaqDetector

    made: list[Any] = []

    def make(scan_shape: tuple[int, int], subdir: str = "bluesky") -> Any:
        provider = StaticPathProvider(
            UUIDFilenameProvider(), PurePath(service.data_dir.resolve() / subdir)
        )
        with init_devices():
            det = StemdaqDetector(service.url, provider, scan_shape=scan_shape, name="stemdaq")
        made.append(det)
        return det

    yield make
    from bluesky.run_engine import call_in_bluesky_event_loop

    for det in made:
        call_in_bluesky_event_loop(det.client.aclose())


def _expected_frames(n_m: int, n_k: int) -> np.ndarray:
    """What the simulator sends for an n_m x n_k scan: [n_m, n_k, ny, nx]."""
    from stemdaq.sim.frames import FrameGenerator, default_scan_shape

    n = n_m * n_k
    gen = FrameGenerator(FRAME_SHAPE, "uint16", default_scan_shape(n), SEED)
    return np.stack([gen.frame(i) for i in range(n)]).reshape(n_m, n_k, *FRAME_SHAPE)


@pytest.fixture
def expected_frames() -> Any:
    """``expected_frames(n_m, n_k)``: the frames the simulator sends, [n_m, n_k, ny, nx]."""
    return _expected_frames
