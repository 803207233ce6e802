"""``stemdaq inspect`` on files that are not whole: an exit code, a reason, never a traceback.

(A ``.partial`` left by a killed writer and a file with gaps are in test_crashes.py.)
"""

from __future__ import annotations

import os
import time

import pytest

from .conftest import active_args, no_traceback, run_cli


@pytest.fixture(scope="module")
def whole_file(tmp_path_factory):
    """One completed acquisition file, made once for the module's cases."""
    from .conftest import end_process, start_sim

    tmp = tmp_path_factory.mktemp("inspect")
    sim = start_sim(tmp / "sim.log")
    try:
        out = tmp / "whole.nxs"
        r = run_cli(*active_args(sim, out, "8x8"))
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        end_process(sim.proc)
    return out


def test_whole_file_is_ok(whole_file):
    r = run_cli("inspect", "--timeout", "20", str(whole_file), timeout=40)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "missing", "directory"])
def test_damaged_or_unreadable_file_exits_2(whole_file, tmp_path, damage):
    path = tmp_path / f"{damage}.nxs"
    if damage == "garbage":
        path.write_bytes(os.urandom(256 * 1024))
    elif damage == "truncated":
        data = whole_file.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "directory":
        path.mkdir()
    t0 = time.monotonic()
    r = run_cli("inspect", "--timeout", "4", str(path), timeout=30)
    assert time.monotonic() - t0 < 15, "inspect overran its --timeout"
    assert r.returncode == 2, f"{damage}: {r.returncode}\n{r.stdout}{r.stderr}"
    no_traceback(r.stdout + r.stderr)
    assert (r.stdout + r.stderr).strip(), "no reason printed"


def test_broken_layout_exits_1_with_the_reason(whole_file, tmp_path):
    import shutil

    import h5py

    from .conftest import DATA

    path = tmp_path / "no_data.nxs"
    shutil.copyfile(whole_file, path)
    with h5py.File(path, "r+") as f:
        del f[DATA]
    r = run_cli("inspect", "--timeout", "10", str(path), timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    no_traceback(r.stdout + r.stderr)
    assert "intensity" in r.stdout + r.stderr
