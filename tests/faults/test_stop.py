"""Stop mid-scan in active mode: the detector is disarmed at once, every frame received is kept,
the file closes cleanly as completed_with_gaps with a "stopped" warning."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import (
    api_counters,
    assert_counters_add_up,
    check_file,
    file_counters,
    partial_of,
    run_cli,
    wait_for,
)

SCAN = [24, 24]
N = SCAN[0] * SCAN[1]
FRAME_TIME = 0.01  # 576 frames: about 5.8 s


@pytest.mark.parametrize("how", ["rest", "cli"])
def test_stop_mid_scan_disarms_and_keeps_every_frame(make_sim, make_serve, how):
    sim = make_sim(frame_time=FRAME_TIME)
    serve = make_serve()
    info = serve.arm(
        scan_shape=SCAN,
        detector_url=sim.rest,
        stream_endpoint=sim.stream,
        file_template=f"stopped_{how}_{{id}}.nxs",
    )
    acq_id = info["id"]
    wait_for(
        lambda: serve.get(f"/acquisitions/{acq_id}")["frames_written"] >= 50,
        20,
        "50 frames written",
    )
    t_stop = time.monotonic()
    if how == "rest":
        r = serve.request("POST", f"/acquisitions/{acq_id}/stop")
        assert r.status_code == 200, r.text
    else:
        r = run_cli("stop", acq_id, "--url", serve.url, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    sim.wait_state(["idle"], 4)
    disarmed_after = time.monotonic() - t_stop
    final = serve.wait_final(acq_id, 20)
    assert final["state"] == "completed_with_gaps", final
    assert any("stop" in w.lower() for w in final["warnings"]), final["warnings"]
    c = final["counters"]
    written = final["frames_written"]
    assert 50 <= written < N - 100, f"{written} frames: the stop did not cut the scan short"
    assert disarmed_after < 4, disarmed_after
    assert c["frames_missing"] == c["frames_expected"] - written, c
    assert c["frames_dropped"] == 0, c  # every frame received is kept
    assert c["frames_received"] == written, c
    assert_counters_add_up(api_counters(final), "REST")
    path = Path(final["file_path"])
    assert path.exists() and not path.name.endswith(".partial")
    assert not partial_of(path).exists()
    report = check_file(path, sim, N)
    assert report.n_written == written
    assert report.state == "completed_with_gaps"
    assert any("stop" in w.lower() for w in report.warnings), report.warnings
    assert_counters_add_up(file_counters(report), "file")
