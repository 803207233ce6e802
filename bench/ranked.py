"""One measurement of the scale-out service: ``stemdaq serve --ranks N`` + one acquisition.

``serve --ranks N`` starts N ``stemdaq rank`` processes and a ``stemdaq fan`` (for N > 1); the
sender plays the detector. frames/s runs from the first image sent to the master closed (its
mtime); CPU is summed over the whole process tree (serve, fan, ranks: ``/proc/<pid>/stat``
before the first frame and once the state is final) and divided by the frames, so it includes
the routing. The fan's own routing thread CPU (``GET /fan``'s ``cpu_seconds``) is reported per
frame as ``route_us``, and each process's CPU per frame (serve, fan, rank i) as ``by_process``.
With N = 1 this is plain ``serve`` (no fan, no routing, one file).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import procstat
from cases import STEMDAQ_DATASET, Case
from results import RunResult
from runs import (
    RUN_TIMEOUT,
    child_env,
    exact,
    free_endpoint,
    stemdaq_command,
)
from serve import FINAL, _free_port, acquisition_body, armed_service


def _free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (rank i listens on first + i)."""
    for _ in range(100):
        first = _free_port()
        ok = True
        for i in range(1, n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", first + i))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError(f"no {n} consecutive free ports")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return out


def _cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each of ``pids`` still running."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            out[pid] = procstat.cpu_seconds(pid)
        except OSError:
            continue
    return out


def _role(pid: int) -> str:
    """``serve``, ``fan``, ``rank 0``, ...: what a process of the tree is, from its command."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = fh.read().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    for role in ("rank", "fan", "serve"):
        if role in args:
            if role == "rank" and "--rank-index" in args:
                return f"rank {args[args.index('--rank-index') + 1]}"
            return role
    return "other"


def measure_ranked(
    case: Case, n: int, tmp: Path, *, ranks: int, k: int = 1, live: bool = True
) -> RunResult:
    """``stemdaq serve --ranks ranks``, one acquisition of ``n`` frames."""
    port = _free_port()
    data_dir = tmp / f"ranks{ranks}"
    log = tmp / f"ranks{ranks}-{case.slug}.log"
    cmd = [*stemdaq_command(), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    cmd += ["--ranks", str(ranks)]
    env = {**child_env(), "STEMDAQ_LOG_LEVEL": "WARNING"}
    env["STEMDAQ_RANK_PORT"] = str(_free_ports(ranks))
    env["STEMDAQ_FAN_PORT"] = str(_free_ports(ranks))
    env["STEMDAQ_FAN_CONTROL_PORT"] = str(_free_port())
    body = acquisition_body(free_endpoint(), n, k, f"ranks{ranks}-{case.slug}.nxs", live)
    fan: dict[str, Any] = {}
    with armed_service(cmd, env, log, case, n, body, port, 90) as run:
        pids = _tree(run.proc.pid)
        roles = {pid: _role(pid) for pid in pids}
        cpu0 = _cpu(pids)
        run.sender.release()
        deadline = time.monotonic() + RUN_TIMEOUT
        final: dict[str, Any] = {}
        while time.monotonic() < deadline:
            final = run.http.get(f"/api/v1/acquisitions/{run.acq_id}").json()
            if final["state"] in FINAL:
                break
            time.sleep(0.1)
        cpu1 = _cpu(pids)
        if ranks > 1:
            fan_url = f"http://127.0.0.1:{env['STEMDAQ_FAN_CONTROL_PORT']}"
            fan = httpx.get(f"{fan_url}/fan", timeout=10).json()
    path = Path(final["file_path"])
    frames = int(final["frames_written"])
    result = RunResult(
        case=case.name,
        writer=f"ranks={ranks}",
        frames_sent=n,
        frames=frames,
        seconds=0.0,
        cpu_seconds=sum(cpu1.values()) - sum(cpu0.values()),
        rss_mb=0.0,
        state=str(final["state"]),
        extra={
            "processes": len(pids),
            "route_us": 1e6 * fan.get("cpu_seconds", 0.0) / max(1, frames) if fan else 0.0,
            # CPU us/frame of each process of the tree (rank processes end with the service)
            "by_process": {
                roles[pid]: 1e6 * (cpu1.get(pid, t0) - t0) / max(1, frames)
                for pid, t0 in cpu0.items()
            },
        },
    )
    if path.exists():
        result.seconds = path.stat().st_mtime_ns / 1e9 - run.sender.t_first
        result.exact, result.chunks = exact(path, STEMDAQ_DATASET, case, n)
        for f in data_dir.glob("*.h5"):
            f.unlink()
        path.unlink()
    return result
