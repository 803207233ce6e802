"""The command-line contract, as facility scripts call it: real processes, sockets and files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import h5py
import pytest
from sim_cli import sim_cli

STEMDAQ = [sys.executable, "-m", "stemdaq.cli"]


@pytest.fixture
def sim_process(request) -> Iterator[tuple[str, str]]:
    """``stemdaq sim --rest-port 0 --stream-port 0 ...``; yields (rest URL, stream endpoint)."""
    with sim_cli(*getattr(request, "param", [])) as urls:
        yield urls


def acquire(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STEMDAQ, "acquire", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_acquire_active_mode_writes_the_scan(sim_process, tmp_path):
    rest, stream = sim_process
    out = tmp_path / "scan.nxs"
    # the sim's stream is on a free port, not 31001: name both (control one, read the other)
    result = acquire(
        "--detector",
        rest,
        "--stream",
        stream,
        "--scan",
        "6x5",
        "--step",
        "2",
        "--unit",
        "nm",
        "--simulation",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "frames written" in result.stdout and "30" in result.stdout
    with h5py.File(out, "r") as f:
        data = f["/entry/measurement/event1/image1/image_4d/intensity"]
        assert data.shape[:2] == (6, 5)
        axis_k = f["/entry/measurement/event1/image1/image_4d/axis_k"]
        assert axis_k.attrs["units"] == "nm"
        assert axis_k[1] - axis_k[0] == pytest.approx(2.0)


@pytest.mark.parametrize("sim_process", [["--faults", "drop=2"]], indirect=True)
def test_acquire_exits_nonzero_when_frames_are_lost(sim_process, tmp_path):
    rest, stream = sim_process
    out = tmp_path / "lossy.nxs"
    result = acquire(
        "--detector",
        rest,
        "--stream",
        stream,
        "--scan",
        "4x4",
        "--end-timeout",
        "2",
        "--out",
        str(out),
    )
    assert result.returncode == 1, result.stderr + result.stdout
    assert re.search(r"acquisition \S+: completed_with_gaps", result.stdout), result.stdout
    assert re.search(r"^gaps\s+1 \(positions without a frame\)$", result.stdout, re.M), (
        result.stdout
    )
    assert str(out) in result.stdout  # the whole path, never cut
    assert out.exists()  # the file is still kept, gaps marked


def test_acquire_passive_mode_waits_for_the_series(sim_process, tmp_path):
    import httpx

    rest, stream = sim_process
    out = tmp_path / "passive.nxs"
    proc = subprocess.Popen(
        [*STEMDAQ, "acquire", "--stream", stream, "--scan", "3x3", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # the receiver connects; the vendor software then starts the series
    api = f"{rest}/detector/api/1.8.0"
    for key, value in (("trigger_mode", "ints"), ("ntrigger", 1), ("nimages", 9)):
        httpx.put(f"{api}/config/{key}", json={"value": value}).raise_for_status()
    httpx.put(f"{api}/command/arm").raise_for_status()
    httpx.put(f"{api}/command/trigger").raise_for_status()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr + stdout
    with h5py.File(out, "r") as f:
        assert f["/entry/measurement/event1/image1/image_4d/intensity"].shape[:2] == (3, 3)


def test_acquire_without_a_source_is_a_usage_error(tmp_path):
    result = acquire("--scan", "2x2", "--out", str(tmp_path / "x.nxs"))
    assert result.returncode == 2
    assert "--detector" in result.stderr


def test_inspect_reports_the_file(sim_process, tmp_path):
    rest, stream = sim_process
    out = tmp_path / "scan.nxs"
    assert (
        acquire(
            "--detector", rest, "--stream", stream, "--scan", "2x3", "--out", str(out)
        ).returncode
        == 0
    )
    result = subprocess.run(
        [*STEMDAQ, "inspect", str(out), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "image_4d" in json.dumps(report)
