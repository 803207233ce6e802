"""A disk that fills while writing: stop at ``min_free_mb``, or at a real ENOSPC; one clear reason.

The scan is 32x32 raw frames of 96x96 uint32 stored uncompressed (``--compression none``):
37.7 MB on a 24 MiB disk. ``--assumed-compression-ratio 4`` lets the preflight estimate through
(9.4 MB), so the disk fills while writing, as it does when frames compress worse than assumed.
The detector is paced so that the scan is still running when the disk fills: a detector that
was not aborted would still be acquiring afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import (
    active_args,
    assert_counters_add_up,
    check_file,
    clip,
    file_counters,
    no_traceback,
    parse_summary,
    partial_of,
    run_cli,
)

SCAN = "32x32"
N = 32 * 32
FRAMES = {"frame_shape": (96, 96), "dtype": "uint32", "compression": "none"}
PLACE = ("--compression", "none", "--assumed-compression-ratio", "4")


def _disk_full_sim(make_sim):
    return make_sim(frame_time=0.004, **FRAMES)  # 1024 frames: about 4 s


def _check_failed_run(r, sim, what: str, n: int = N) -> None:
    text = r.stdout + r.stderr
    assert r.returncode == 1, clip(text)
    no_traceback(text)
    n_lines = len(r.stderr.splitlines())
    assert n_lines < 40, f"{n_lines} lines on stderr (log flood):\n{clip(r.stderr)}"
    summary = parse_summary(r.stdout)
    assert summary.get("state") == "failed", r.stdout
    assert_counters_add_up(summary, "summary")
    reported = Path(summary["file"])
    assert reported.exists(), f"the reported file {reported} does not exist"
    assert not partial_of(reported).exists() or reported.name.endswith(".partial")
    report = check_file(reported, sim, n)
    assert 0 < report.n_written < n
    assert report.n_written == summary["frames_written"], (report.n_written, summary)
    assert report.state == "failed"
    assert report.error and re.search(what, report.error, re.I), report.error
    assert_counters_add_up(file_counters(report), "file")
    # the detector was aborted, not left streaming to nobody
    sim.wait_state(["idle"], 5)


def test_min_free_reached_while_writing_stops_cleanly(make_sim, small_disk):
    small_disk.require_tmpfs()
    sim = _disk_full_sim(make_sim)
    out = small_disk.path / "full.nxs"
    r = run_cli(*active_args(sim, out, SCAN, *PLACE, "--min-free-mb", "8"), timeout=60)
    text = r.stdout + r.stderr
    assert re.search(r"disk.*(nearly )?full", text, re.I), clip(text)
    assert re.search(r"\d+(\.\d+)?\s*MB free", text, re.I), clip(text)
    _check_failed_run(r, sim, r"disk.*full")
    # the headroom was kept: it stopped before the disk was full
    assert small_disk.free_mb() > 4, small_disk.free_mb()


def _enospc_run(sim, out: Path, scan: str, n: int, small_disk, *extra: str) -> None:
    """``--min-free-mb 0``: the write itself fails (ENOSPC on tmpfs; EFBIG without root):
    failed once, with one reason, the file claims only the frames it holds."""
    r = run_cli(
        *active_args(sim, out, scan, *extra, "--min-free-mb", "0"),
        timeout=60,
        preexec=small_disk.preexec,
    )
    text = r.stdout + r.stderr
    assert re.search(r"no space|disk.*full|file too large", text, re.I), clip(text)
    _check_failed_run(r, sim, r"no space|disk.*full|file too large", n)
    # one reason, not one line per frame: the error is a single sentence
    assert len(parse_summary(r.stdout).get("error", "")) < 400


def test_real_enospc_fails_once_with_one_reason(make_sim, small_disk):
    sim = _disk_full_sim(make_sim)
    _enospc_run(sim, small_disk.path / "enospc.nxs", SCAN, N, small_disk, *PLACE)


def test_real_enospc_while_the_in_order_lane_writes(make_sim, small_disk):
    """Detector bitshuffle-LZ4 frames of whole 8 KiB blocks (512x512 uint32, ~23 kB each:
    40x40 of them are 37 MB): the in-order lane assembles and writes 8-frame chunks when the
    disk fills. The frames compress ~45x: assuming 80x lets the estimate (21 MB) through."""
    sim = make_sim(frame_time=0.003, frame_shape=(512, 512), dtype="uint32")
    out = small_disk.path / "lane.nxs"
    _enospc_run(sim, out, "40x40", 40 * 40, small_disk, "--assumed-compression-ratio", "80")


def test_service_disk_full_is_failed_in_history_across_restart(make_sim, make_serve, small_disk):
    small_disk.require_tmpfs()
    sim = _disk_full_sim(make_sim)
    serve = make_serve(small_disk.path)
    info = serve.arm(
        scan_shape=[32, 32],
        detector_url=sim.rest,
        stream_endpoint=sim.stream,
        compression="none",
        assumed_compression_ratio=4,
        min_free_mb=8,
        file_template="full_{id}.nxs",
    )
    acq_id = info["id"]
    final = serve.wait_final(acq_id, 40)
    assert final["state"] == "failed", final
    assert re.search(r"disk.*full", final["error"] or "", re.I), final["error"]
    sim.wait_state(["idle"], 5)
    reported = Path(final["file_path"])
    assert reported.exists(), f"the reported file {reported} does not exist"
    report = check_file(reported, sim, N)
    assert 0 < report.n_written == final["frames_written"]
    assert report.state == "failed"
    # the record survives a restart unchanged
    serve.proc.terminate()
    serve.proc.wait(20)
    serve.restart()
    again = serve.get(f"/acquisitions/{acq_id}")
    assert again["state"] == "failed", again
    assert again["error"] == final["error"]
    assert again["frames_written"] == final["frames_written"]
    assert Path(again["file_path"]).exists()
