"""One measurement of a receiver that exits when its file is closed.

That is the benchmark's own receivers (:mod:`receivers`) and ``stemdaq acquire --stream``
(passive mode: it waits for the series, the sender then sends start, images, end). The driver:

1. starts the sender (binds PUSH), then the receiver as a fresh process;
2. waits until the receiver took the series start, lets it settle, samples its CPU
   (``/proc/<pid>/stat``), and lets the sender go (``t_first``);
3. reaps the receiver with ``os.wait4`` in :mod:`launcher` (CPU and peak RSS of its life);
4. reads the end time (the file's mtime, or the transport's last message), the frame count,
   and a sample of frames back, bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import procstat
from cases import (
    BENCH_DATASET,
    STEMDAQ_DATASET,
    Case,
    sample_indices,
    scan_shape,
    synthetic_frames,
)
from launcher import Launcher
from results import RunResult
from sender import Sender

HERE = Path(__file__).resolve().parent
SETTLE = 0.3  # seconds between the receiver's connect and the first image
RUN_TIMEOUT = 900.0  # seconds a receiver may take before it is killed
END_TIMEOUT = 2.0  # stemdaq's --end-timeout: seconds of silence that end a series
MIN_FREE_MB = 1.0  # stemdaq's --min-free-mb: the benchmark's files are deleted after each run


def free_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` with a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def stemdaq_command() -> list[str]:
    """The ``stemdaq`` console script of this Python (not a shell shim, which would fork)."""
    script = Path(sys.executable).parent / "stemdaq"
    if script.exists():
        return [str(script)]
    found = shutil.which("stemdaq")
    return [found] if found else [sys.executable, "-m", "stemdaq.cli"]


@cache
def acquire_has_frames_per_chunk() -> bool:
    """True if ``stemdaq acquire`` takes ``--frames-per-chunk`` (asked once, via ``--help``)."""
    out = subprocess.run(
        [*stemdaq_command(), "acquire", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    return "--frames-per-chunk" in out.stdout


def child_env() -> dict[str, str]:
    """The environment of every receiver: one OpenMP thread for bitshuffle, as stemdaq sets."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def acquire_command(endpoint: str, case: Case, n: int, out: Path, k: int) -> list[str]:
    """``stemdaq acquire --stream ... --scan RxC --out FILE`` for one run."""
    rows, cols = scan_shape(n, k)
    cmd = [
        *stemdaq_command(),
        "acquire",
        "--stream",
        endpoint,
        "--scan",
        f"{rows}x{cols}",
        "--out",
        str(out),
        "--min-free-mb",
        f"{MIN_FREE_MB:g}",
        "--end-timeout",
        f"{END_TIMEOUT:g}",
    ]
    if k > 1 and acquire_has_frames_per_chunk():
        cmd += ["--frames-per-chunk", str(k)]
    return cmd


def measure(
    launcher: Launcher,
    writer: str,
    case: Case,
    n: int,
    tmp: Path,
    *,
    k: int = 1,
    soak: bool = False,
) -> RunResult:
    """Run ``writer`` (transport, naive, minimal, minimal-scan, minimal-k8 or acquire) on ``n``
    frames."""
    endpoint = free_endpoint()
    stem = f"{writer}-{case.slug}"
    out = tmp / (stem + (".nxs" if writer == "acquire" else ".h5"))
    result_json = tmp / (stem + ".json")
    log = tmp / (stem + ".log")
    if writer == "acquire":
        cmd = acquire_command(endpoint, case, n, out, k)
    else:
        cmd = [sys.executable, str(HERE / "receivers.py"), writer, "--endpoint", endpoint]
        cmd += ["--case", case.name, "--frames", str(n), "--out", str(out)]
        cmd += ["--result", str(result_json)]
    sender = Sender(endpoint, case, n)
    sender.start()
    pid = launcher.spawn(cmd, child_env(), log)
    try:
        sender.wait_connected(launcher.alive)
        time.sleep(SETTLE)
        cpu0 = procstat.cpu_seconds(pid)
        sender.release()
        exited = launcher.wait(
            RUN_TIMEOUT,
            sample_every=1.0 if soak else None,
            progress=lambda: sender.sent,
            rss=procstat.rss_mb,
        )
    except BaseException:
        launcher.kill()
        print("\n".join(log.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
        raise
    finally:
        sender.finish(timeout=30 if launcher.poll() is not None else 2)
    text = log.read_text(errors="replace")
    t_first = sender.t_first
    result = RunResult(
        case=case.name,
        writer=writer,
        frames_sent=n,
        frames=0,
        seconds=0.0,
        cpu_seconds=exited.cpu_seconds - cpu0,
        rss_mb=exited.max_rss_mb,
        seconds_to_exit=exited.t_exit - t_first,
    )
    if soak:
        result.extra["rss_timeline"] = exited.rss_timeline
    if writer == "acquire":
        written = re.search(r"^frames written\s+(\d+)", text, re.M)
        state = re.search(r"^acquisition \S+: (\w+)", text, re.M)
        result.frames = int(written.group(1)) if written else 0
        result.state = state.group(1) if state else f"exit {exited.returncode}"
        if not out.exists() and out.with_name(out.name + ".partial").exists():
            out = out.with_name(out.name + ".partial")
    elif result_json.exists():
        result.frames = json.loads(result_json.read_text())["frames"]
    if exited.returncode != 0 or result.frames == 0:
        tail = "\n".join(text.splitlines()[-15:])
        print(f"  {writer} exited {exited.returncode}:\n{tail}", file=sys.stderr)
    if writer == "transport" or not out.exists():
        t_end = json_t_end(result_json) if result_json.exists() else exited.t_exit
    else:
        t_end = out.stat().st_mtime_ns / 1e9  # the last write of the file's close
        result.file_bytes = out.stat().st_size
        dataset = STEMDAQ_DATASET if writer == "acquire" else BENCH_DATASET
        result.exact, result.chunks = exact(out, dataset, case, n)
    result.seconds = t_end - t_first
    for path in (out, result_json, log):
        path.unlink(missing_ok=True)
    return result


def json_t_end(path: Path) -> float:
    """``t_end`` of a receiver's result file."""
    return float(json.loads(path.read_text())["t_end"])


def exact(path: Path, dataset: str, case: Case, n: int) -> tuple[bool, tuple[int, ...] | None]:
    """Bit-for-bit read-back of a sample of frames (stemdaq's [m, k, ny, nx] or [n, ny, nx]).

    Returns whether every sampled frame is exact, and the dataset's chunk shape.
    """
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)

    frames = synthetic_frames(case)
    try:
        with h5py.File(path, "r") as f:
            dset = f[dataset]
            chunks = dset.chunks
            cols = dset.shape[1] if dset.ndim == 4 else None
            for i in sample_indices(n):
                got = dset[i // cols, i % cols] if cols else dset[i]
                if not np.array_equal(got, frames[i % len(frames)]):
                    return False, chunks
    except (OSError, KeyError) as exc:
        print(f"  cannot read {path.name}: {exc}", file=sys.stderr)
        return False, None
    return True, chunks
