"""Processes that die mid-series: the sender, ``stemdaq acquire``, ``stemdaq serve``."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
from stemdaq.writer import clear_status_flags

from .conftest import (
    MASK,
    active_args,
    assert_counters_add_up,
    check_file,
    file_counters,
    kill9,
    n_of,
    no_traceback,
    parse_summary,
    partial_of,
    run_cli,
    wait_for,
)


def _mask_count(path: Path) -> int:
    """Frames the (SWMR-flushed) written mask of a file being written claims, 0 if unreadable."""
    try:
        with h5py.File(path, "r", swmr=True, locking=False) as f:
            return int(f[MASK][()].astype(bool).sum()) if MASK in f else 0
    except (OSError, KeyError):
        return 0


def test_sender_killed_mid_series_closes_with_gaps(make_sim, start_cli, tmp_path):
    """Passive mode; the detector process is SIGKILLed mid-scan: no end message ever comes.
    After ``--end-timeout`` s of silence the file is closed under its final name,
    completed_with_gaps, with the "no end-of-series" warning in the file and the summary."""
    scan = "16x16"
    n = n_of(scan)
    sim = make_sim(frame_time=0.01)  # 256 frames: about 2.6 s
    out = tmp_path / "sender_killed.nxs"
    cli = start_cli(
        "acquire",
        "--stream",
        sim.stream,
        "--scan",
        scan,
        "--timeout",
        "20",
        "--end-timeout",
        "2",
        "--out",
        str(out),
    )
    time.sleep(0.5)  # the PUSH socket holds the start message until the receiver connects
    sim.start_series(n)
    wait_for(lambda: _mask_count(partial_of(out)) > 0, 15, "frames flushed to X.partial")
    sim.kill()
    t_kill = time.monotonic()
    r = cli.wait(30)
    assert time.monotonic() - t_kill < 12, "the end timeout (2 s) did not end the acquisition"
    assert r.returncode == 1, r.stdout + r.stderr
    no_traceback(r.stdout + r.stderr)
    summary = parse_summary(r.stdout)
    assert summary.get("state") == "completed_with_gaps", r.stdout
    assert any("no end-of-series" in w for w in summary["warnings"]), summary
    assert_counters_add_up(summary, "summary")
    assert out.exists() and not partial_of(out).exists()
    report = check_file(out, sim, n)
    assert 0 < report.n_written < n
    assert report.n_written == summary["frames_written"]
    assert report.state == "completed_with_gaps"
    assert any("no end-of-series" in w for w in report.warnings), report.warnings
    assert_counters_add_up(file_counters(report), "file")
    inspect = run_cli("inspect", str(out), timeout=40)
    assert inspect.returncode == 1, inspect.stdout + inspect.stderr
    no_traceback(inspect.stdout + inspect.stderr)


def test_acquire_killed_leaves_a_readable_partial_and_a_busy_detector(
    make_sim, start_cli, tmp_path
):
    scan = "24x24"
    n = n_of(scan)
    # 576 frames in about 11.5 s: the detector must still be in the series after the first
    # flush, the kill, a check and an inspect (a busy 2-core machine took 5.8 s for those);
    # the test ends it with an abort, so the length costs nothing
    sim = make_sim(frame_time=0.02)
    out = tmp_path / "killed.nxs"
    partial = partial_of(out)
    cli = start_cli(*active_args(sim, out, scan))
    wait_for(lambda: _mask_count(partial) > 0, 20, "frames flushed to X.partial")
    kill9(cli.proc)

    # the .partial stays, and everything it claims is there, bit for bit
    assert partial.exists() and not out.exists()
    report = check_file(partial, sim, n)
    assert 0 < report.n_written < n
    t0 = time.monotonic()
    inspect = run_cli("inspect", "--timeout", "10", str(partial), timeout=30)
    assert time.monotonic() - t0 < 20
    assert inspect.returncode == 1, inspect.stdout + inspect.stderr
    no_traceback(inspect.stdout + inspect.stderr)
    assert str(report.n_written) in inspect.stdout, inspect.stdout

    # nobody told the detector: it is still in the series
    assert sim.state() in ("ready", "acquire"), sim.state()
    busy_out = tmp_path / "while_busy.nxs"
    busy = run_cli(*active_args(sim, busy_out, "8x8"), timeout=60)
    assert busy.returncode == 2, busy.stdout + busy.stderr
    assert "stemdaq detector abort" in busy.stdout + busy.stderr, busy.stdout + busy.stderr
    no_traceback(busy.stdout + busy.stderr)
    assert not busy_out.exists() and not partial_of(busy_out).exists()

    # the documented way back: stemdaq detector abort, then a new acquisition works
    abort = run_cli("detector", "abort", sim.rest, timeout=30)
    assert abort.returncode == 0, abort.stdout + abort.stderr
    sim.wait_state(["idle"], 5)
    again_out = tmp_path / "after_abort.nxs"
    again = run_cli(*active_args(sim, again_out, "8x8"), timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert check_file(again_out, sim, 64).n_written == 64

    # recovery for tools that do not open SWMR: clear the status flags, then a plain open works
    clear_status_flags(partial)
    with h5py.File(partial, "r") as f:
        assert int(f[MASK][()].astype(bool).sum()) == report.n_written


def test_serve_killed_then_restarted_reports_the_partial(make_sim, make_serve):
    scan = [24, 24]
    n = scan[0] * scan[1]
    # 576 frames in about 11.5 s: the detector must still be in the series after the first
    # flush, the kill, a check and an inspect (a busy 2-core machine took 5.8 s for those);
    # the test ends it with an abort, so the length costs nothing
    sim = make_sim(frame_time=0.02)
    serve = make_serve()
    info = serve.arm(
        scan_shape=scan,
        detector_url=sim.rest,
        stream_endpoint=sim.stream,
        file_template="killed_{id}.nxs",
    )
    acq_id = info["id"]
    final_name = Path(info["file_path"])
    wait_for(lambda: _mask_count(partial_of(final_name)) > 0, 20, "frames flushed to the .partial")
    serve.kill()
    serve.restart()
    after = serve.get(f"/acquisitions/{acq_id}")
    assert after["state"] == "failed", after
    assert "restart" in (after["error"] or ""), after["error"]
    path = Path(after["file_path"])
    assert path == partial_of(final_name), (path, final_name)
    assert path.exists()
    report = check_file(path, sim, n)
    assert report.n_written > 0
    assert after["frames_written"] == report.n_written, (after["frames_written"], report.n_written)
    meta = serve.request("GET", f"/acquisitions/{acq_id}/metadata")
    assert meta.status_code == 200, meta.text
    assert_counters_add_up(
        {
            "frames_expected": after["frames_expected"],
            "frames_written": after["frames_written"],
            "frames_missing": after["counters"]["frames_missing"],
            "dropped": after["counters"]["dropped"],
        },
        "history after restart",
    )
