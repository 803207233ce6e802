"""Preflight: refused before the detector is armed, with nothing created (CLI exit 2, REST 4xx/5xx).

And the one check after arming: the start message must arrive within ``arm_timeout``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from .conftest import (
    active_args,
    check_file,
    free_port,
    n_of,
    no_traceback,
    parse_summary,
    partial_of,
    run_cli,
)


def _nothing_created(folder, out) -> None:
    assert not out.exists(), f"{out} was created by a refused acquisition"
    assert not partial_of(out).exists(), f"{partial_of(out)} was left by a refused acquisition"
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(out.stem)]
    assert not leftovers, leftovers


def _mentions_space(text: str) -> None:
    """The message names the free space and the estimate (numbers with a unit)."""
    assert re.search(r"free", text, re.I), text
    assert re.search(r"estimat", text, re.I), text
    assert len(re.findall(r"\d+(\.\d+)?\s*(MB|MiB|GB|GiB|kB|KiB|bytes)", text)) >= 2, text


def test_not_enough_space_for_default_headroom_is_refused(make_sim, small_disk):
    """``min_free_mb`` defaults to 256: a 24 MiB disk cannot take even a small scan."""
    small_disk.require_tmpfs()
    sim = make_sim()
    out = small_disk.path / "scan.nxs"
    r = run_cli(*active_args(sim, out, "8x8"))
    assert r.returncode == 2, r.stdout + r.stderr
    _mentions_space(r.stdout + r.stderr)
    no_traceback(r.stdout + r.stderr)
    assert sim.times_armed() == 0
    _nothing_created(small_disk.path, out)


def test_estimate_larger_than_free_space_is_refused(make_sim, small_disk):
    """40x40 frames of 96x96 uint32 is 59 MB uncompressed: refused on 24 MiB even with
    ``--min-free-mb 0``; ``--assumed-compression-ratio 8`` makes the estimate fit."""
    small_disk.require_tmpfs()
    sim = make_sim(frame_shape=(96, 96), dtype="uint32")
    out = small_disk.path / "big.nxs"
    r = run_cli(*active_args(sim, out, "40x40", "--min-free-mb", "0"))
    assert r.returncode == 2, r.stdout + r.stderr
    _mentions_space(r.stdout + r.stderr)
    assert sim.times_armed() == 0
    _nothing_created(small_disk.path, out)
    # the sim's frames are sparse: bslz4 stores them in a fraction of 8x less
    r = run_cli(
        *active_args(sim, out, "40x40", "--min-free-mb", "0", "--assumed-compression-ratio", "8")
    )
    assert r.returncode == 0, r.stdout + r.stderr
    report = check_file(out, sim, 1600)
    assert report.n_written == 1600


def test_unreachable_stream_is_refused_naming_the_endpoint(make_sim, tmp_path):
    sim = make_sim()
    out = tmp_path / "scan.nxs"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    args = active_args(sim, out, "8x8")
    args[args.index("--stream") + 1] = endpoint
    t0 = time.monotonic()
    r = run_cli(*args, timeout=40)
    assert r.returncode == 2, r.stdout + r.stderr
    assert time.monotonic() - t0 < 20
    assert endpoint in r.stdout + r.stderr or endpoint.removeprefix("tcp://") in r.stderr
    no_traceback(r.stdout + r.stderr)
    assert sim.times_armed() == 0
    _nothing_created(tmp_path, out)


def test_unreachable_stream_passive_mode_is_refused(tmp_path):
    out = tmp_path / "passive.nxs"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    r = run_cli("acquire", "--stream", endpoint, "--scan", "8x8", "--out", str(out), timeout=40)
    assert r.returncode == 2, r.stdout + r.stderr
    assert endpoint.removeprefix("tcp://") in r.stdout + r.stderr
    _nothing_created(tmp_path, out)


def test_start_message_missing_after_arm_disarms_without_trigger(make_sim, start_cli, tmp_path):
    """The stream endpoint answers (another, idle detector) but the armed detector's start
    message never reaches it: after ``--arm-timeout`` the detector is disarmed, never
    triggered; the acquisition fails naming the endpoint."""
    armed = make_sim()
    elsewhere = make_sim()  # listens, sends nothing
    out = tmp_path / "scan.nxs"
    args = active_args(armed, out, "8x8", "--arm-timeout", "2")
    args[args.index("--stream") + 1] = elsewhere.stream
    t0 = time.monotonic()
    cli = start_cli(*args)
    seen: set[str] = set()
    while cli.proc.poll() is None and time.monotonic() - t0 < 30:
        seen.add(armed.state())  # ready = armed, acquire = triggered
        time.sleep(0.05)
    took = time.monotonic() - t0
    r = cli.wait(10)
    assert r.returncode == 1, r.stdout + r.stderr
    text = r.stdout + r.stderr
    assert elsewhere.stream in text or elsewhere.stream.removeprefix("tcp://") in text, text
    no_traceback(text)
    assert took < 15, f"gave up after {took:.1f} s, arm timeout was 2 s"
    assert "ready" in seen, f"the detector was never seen armed: {seen}"
    assert "acquire" not in seen, "the detector was triggered without a start message"
    summary = parse_summary(r.stdout)
    assert summary.get("state") == "failed", r.stdout
    assert armed.state() == "idle", "the detector was left armed"
    assert armed.times_armed() == 1
    assert not partial_of(out).exists(), "a failed acquisition left X.partial behind"
    if out.exists():
        report = check_file(out, armed, n_of("8x8"))
        assert report.n_written == 0
        assert report.state == "failed"


@pytest.mark.parametrize(
    ("overrides", "status", "words"),
    [
        ({"min_free_mb": 1_000_000}, 507, ("free", "estimat")),
        ({"stream_endpoint": "PORT"}, 422, ("127.0.0.1",)),
    ],
    ids=["no-space-507", "stream-unreachable-422"],
)
def test_service_refuses_before_arming(make_sim, make_serve, overrides, status, words):
    sim = make_sim()
    serve = make_serve()
    body = {"scan_shape": [8, 8], "detector_url": sim.rest, "stream_endpoint": sim.stream}
    body.update(overrides)
    if body["stream_endpoint"] == "PORT":
        body["stream_endpoint"] = f"tcp://127.0.0.1:{free_port()}"
    r = serve.request("POST", "/acquisitions", json=body)
    assert r.status_code == status, r.text
    for word in words:
        assert word in r.text.lower() or word in r.text, r.text
    assert sim.times_armed() == 0
    files = [p for p in serve.data_dir.rglob("*") if p.is_file() and ".stemdaq" not in p.parts]
    assert not files, f"a refused acquisition created {files}"
    # the service is still usable
    ok = serve.request("POST", "/acquisitions", json={**body, **_good(sim)})
    assert ok.status_code == 201, ok.text
    info = serve.wait_final(ok.json()["id"], 30)
    assert info["state"] == "completed", info


def _good(sim) -> dict:
    return {"stream_endpoint": sim.stream, "min_free_mb": 0}


@pytest.mark.parametrize("where", ["a-directory", "under-a-file", "read-only-fs"])
def test_output_that_cannot_be_written_is_refused(make_sim, tmp_path, where):
    sim = make_sim()
    if where == "a-directory":
        out = tmp_path / "scan.nxs"
        out.mkdir()
    elif where == "under-a-file":
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        out = tmp_path / "notes.txt" / "scan.nxs"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        if os.geteuid() != 0:
            pytest.skip("a read-only mount needs root (root ignores file modes)")
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True
        )
        if mount.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs: {mount.stderr!r}")
        out = ro / "scan.nxs"
    try:
        r = run_cli(*active_args(sim, out, "8x8"))
        assert r.returncode == 2, r.stdout + r.stderr
        assert out.name in r.stdout + r.stderr or str(out.parent) in r.stdout + r.stderr
        no_traceback(r.stdout + r.stderr)
        assert sim.times_armed() == 0
        assert not partial_of(out).exists()
        if where == "a-directory":
            assert out.is_dir() and not any(out.iterdir())
    finally:
        if where == "read-only-fs":
            subprocess.run(["umount", str(tmp_path / "ro")], capture_output=True, timeout=30)
