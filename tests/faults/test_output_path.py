"""The output path: a clean run, existing files, ``--overwrite``, two writers on one path."""

from __future__ import annotations

import time
from pathlib import Path

from .conftest import (
    active_args,
    assert_counters_add_up,
    check_file,
    file_counters,
    n_of,
    no_traceback,
    parse_summary,
    partial_of,
    run_cli,
    sha256,
    wait_for,
)


def test_clean_scan_is_completed_and_whole(make_sim, tmp_path):
    """The baseline row: no fault, exit 0, state completed, inspect 0, every frame bit exact."""
    sim = make_sim()
    out = tmp_path / "clean.nxs"
    r = run_cli(*active_args(sim, out, "8x8"))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = parse_summary(r.stdout)
    assert summary["state"] == "completed"
    assert_counters_add_up(summary, "summary")
    assert summary["frames_written"] == 64 and summary["frames_missing"] == 0
    assert not partial_of(out).exists()
    report = check_file(out, sim, 64)
    assert report.n_written == 64
    assert report.state == "completed"
    assert_counters_add_up(file_counters(report), "file")
    inspect = run_cli("inspect", str(out), timeout=40)
    assert inspect.returncode == 0, inspect.stdout + inspect.stderr


def _refused_without_harm(r, sim, out: Path, name: Path, times_armed: int) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    text = r.stdout + r.stderr
    assert str(name) in text or name.name in text, text
    assert "exists" in text, text
    no_traceback(text)
    assert sim.times_armed() == times_armed, "the detector was armed by a refused acquisition"


def test_existing_output_is_refused_and_untouched(make_sim, tmp_path):
    sim = make_sim()
    out = tmp_path / "scan.nxs"
    out.write_bytes(b"results of yesterday" * 1000)
    before = sha256(out)
    r = run_cli(*active_args(sim, out, "8x8"))
    _refused_without_harm(r, sim, out, out, 0)
    assert "--overwrite" in r.stdout + r.stderr
    assert sha256(out) == before
    assert not partial_of(out).exists()


def test_existing_partial_is_refused_even_with_overwrite(make_sim, tmp_path):
    """A ``.partial`` may be a crash's or another writer's data: never replaced."""
    sim = make_sim()
    out = tmp_path / "scan.nxs"
    partial = partial_of(out)
    partial.write_bytes(b"frames of a crashed run" * 1000)
    before = sha256(partial)
    for extra in ((), ("--overwrite",)):
        r = run_cli(*active_args(sim, out, "8x8", *extra))
        _refused_without_harm(r, sim, out, partial, 0)
        assert sha256(partial) == before
        assert not out.exists()


def test_overwrite_replaces_an_existing_file(make_sim, tmp_path):
    sim = make_sim()
    out = tmp_path / "scan.nxs"
    out.write_bytes(b"old" * 1000)
    r = run_cli(*active_args(sim, out, "8x8", "--overwrite"))
    assert r.returncode == 0, r.stdout + r.stderr
    report = check_file(out, sim, 64)
    assert report.n_written == 64 and report.state == "completed"
    assert not partial_of(out).exists()


def test_second_writer_on_the_same_path_is_refused_at_once(make_sim, start_cli, tmp_path):
    """The first acquisition reserves ``X.partial`` before arming; a second one exits 2 at once
    and arms nothing; the first completes and its file is whole."""
    scan = "16x16"
    first_sim = make_sim(frame_time=0.01)  # 256 frames: about 2.6 s
    second_sim = make_sim()
    out = tmp_path / "shared.nxs"
    first = start_cli(*active_args(first_sim, out, scan))
    wait_for(lambda: partial_of(out).exists(), 15, "the first acquisition to reserve X.partial")
    t0 = time.monotonic()
    second = run_cli(*active_args(second_sim, out, scan), timeout=30)
    took = time.monotonic() - t0
    assert second.returncode == 2, second.stdout + second.stderr
    text = second.stdout + second.stderr
    assert "exists" in text or "being written" in text, text
    no_traceback(text)
    assert took < 10, f"the second writer took {took:.1f} s to give up"
    assert second_sim.times_armed() == 0
    done = first.wait(60)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = parse_summary(done.stdout)
    assert summary["state"] == "completed"
    report = check_file(out, first_sim, n_of(scan))
    assert report.n_written == n_of(scan)
    assert not partial_of(out).exists()
