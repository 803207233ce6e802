"""bench/datapath.py, the data thread's A/B tool, runs and checks what it measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from stemdaq.rank.lane import BUILT as LANE_BUILT

BENCH = Path(__file__).resolve().parents[1] / "bench" / "datapath.py"


@pytest.mark.parametrize("extra", [[], ["--dry"], ["--no-lane"]])
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
    assert ("without HDF5 chunk writes" in out.stdout) == ("--dry" in extra)
    if "--no-lane" in extra:
        assert "no lane" in out.stdout
    elif LANE_BUILT:  # the usual 192x192 stream: the lane takes all but the first few frames
        taken = int(re.search(r"lane took (\d+) frames", out.stdout).group(1))  # type: ignore[union-attr]
        assert taken >= 1900
    assert not list(tmp_path.glob("**/*.partial"))  # the bench removes its files
