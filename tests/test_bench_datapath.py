"""bench/datapath.py, the data thread's A/B tool, runs and checks what it measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "datapath.py"


@pytest.mark.parametrize("extra", [[], ["--dry"]])
def test_datapath_bench_writes_every_frame(tmp_path, extra):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--frames", "2000", "--repeat", "1", "--dir", str(tmp_path)]
        + extra,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "all frames written: True" in out.stdout
    assert ("without HDF5 chunk writes" in out.stdout) == bool(extra)
    assert not list(tmp_path.glob("**/*.partial"))  # the bench removes its files
