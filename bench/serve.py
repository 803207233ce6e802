"""One measurement of the service: ``stemdaq serve`` + ``POST /api/v1/acquisitions``.

The service runs as a fresh subprocess (``--data-dir`` in the benchmark's folder). The sender
binds first (the service checks that something listens before it arms), then the POST
overrides ``stream_endpoint``, ``scan_shape`` (exactly the frames sent), ``end_timeout``,
``min_free_mb``, the file name and, with ``--frames-per-chunk``, ``frames_per_chunk``. While
the frames stream in, ``GET /api/v1/status`` is polled every 10 ms; the latency of the
requests answered while the service says ``acquiring`` is reported (p50/p99/max). CPU is the
difference of two ``/proc/<pid>/stat`` samples, before the first frame and once the final
state is seen; it includes serving those status requests.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import procstat
from cases import STEMDAQ_DATASET, Case, scan_shape
from results import RunResult
from runs import (
    END_TIMEOUT,
    MIN_FREE_MB,
    RUN_TIMEOUT,
    SETTLE,
    child_env,
    exact,
    free_endpoint,
    stemdaq_command,
)
from sender import Sender

FINAL = {"completed", "completed_with_gaps", "aborted", "failed"}
POLL = 0.01  # seconds between status requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(http: httpx.Client, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("stemdaq serve exited at start")
        try:
            http.get("/healthz").raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"stemdaq serve did not answer within {timeout:g} s")


def _latency(latencies: list[float]) -> dict[str, float]:
    lat = np.array(latencies) * 1e3
    if not len(lat):
        return {"requests": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": 0.0}
    return {
        "requests": len(lat),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
    }


@dataclass
class Armed:
    """A running ``stemdaq serve`` with one acquisition armed and the sender connected."""

    http: httpx.Client
    proc: subprocess.Popen[bytes]
    sender: Sender
    acq_id: str


def acquisition_body(
    endpoint: str, n: int, k: int, file_name: str, live: bool = True
) -> dict[str, Any]:
    """The POST body of one benchmark acquisition of exactly ``n`` frames (``live``: the live
    view and summaries on, stemdaq's default)."""
    rows, cols = scan_shape(n, k)
    body: dict[str, Any] = {
        "stream_endpoint": endpoint,
        "scan_shape": [rows, cols],
        "end_timeout": END_TIMEOUT,
        "min_free_mb": MIN_FREE_MB,
        "file_template": file_name,
    }
    if k > 1:
        body["frames_per_chunk"] = k
    if not live:
        body["summary"] = False
    return body


@contextmanager
def armed_service(
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    case: Case,
    n: int,
    body: dict[str, Any],
    port: int,
    start_timeout: float,
) -> Iterator[Armed]:
    """Start the service, arm one acquisition (``body``) with the sender connected; on the way
    out stop the sender and the service (its last log lines on stderr if something failed)."""
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env)
        sender = Sender(body["stream_endpoint"], case, n)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                _wait_healthy(http, proc, start_timeout)
                sender.start()
                armed = http.post("/api/v1/acquisitions", json=body)
                if armed.status_code != 201:
                    raise RuntimeError(f"POST /api/v1/acquisitions: {armed.text}")
                sender.wait_connected(lambda: proc.poll() is None)
                time.sleep(SETTLE)
                yield Armed(http, proc, sender, armed.json()["id"])
        except BaseException:
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
            raise
        finally:
            sender.finish(timeout=5)
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log.unlink(missing_ok=True)


def measure_serve(case: Case, n: int, tmp: Path, *, k: int = 1, live: bool = True) -> RunResult:
    """``stemdaq serve``, one acquisition of ``n`` frames through the REST API."""
    port = _free_port()
    data_dir = tmp / "serve"
    log = tmp / f"serve-{case.slug}.log"
    cmd = [*stemdaq_command(), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    env = {**child_env(), "STEMDAQ_LOG_LEVEL": "WARNING"}
    body = acquisition_body(free_endpoint(), n, k, f"serve-{case.slug}.nxs", live)
    latencies: list[float] = []
    with armed_service(cmd, env, log, case, n, body, port, 60) as run:
        http, proc = run.http, run.proc
        cpu0 = procstat.cpu_seconds(proc.pid)
        run.sender.release()
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            status = http.get("/api/v1/status").json()
            dt = time.perf_counter() - t0
            if status.get("state") == "acquiring":
                latencies.append(dt)
            if (status.get("acquisition") or {}).get("state") in FINAL:
                break
            time.sleep(POLL)
        cpu1 = procstat.cpu_seconds(proc.pid)
        rss = procstat.rss_mb(proc.pid, "VmHWM")
        final = http.get(f"/api/v1/acquisitions/{run.acq_id}").json()
    path = Path(final["file_path"])
    if not path.is_absolute():
        path = data_dir / path
    result = RunResult(
        case=case.name,
        writer="serve",
        frames_sent=n,
        frames=int(final["frames_written"]),
        seconds=0.0,
        cpu_seconds=cpu1 - cpu0,
        rss_mb=rss,
        state=str(final["state"]),
        extra={"status": _latency(latencies)},
    )
    if path.exists():
        result.seconds = path.stat().st_mtime_ns / 1e9 - run.sender.t_first
        result.file_bytes = path.stat().st_size
        result.exact, result.chunks = exact(path, STEMDAQ_DATASET, case, n)
        path.unlink()
    return result
