"""Scale-out fixtures: real ``stemdaq sim`` and ``stemdaq serve --ranks N`` processes, real files.

``serve --ranks N`` starts N ``stemdaq rank`` processes and a ``stemdaq fan`` itself; every port
(API, ranks, fan) is chosen free here, and every process ends at teardown (by its pid).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import free_ports, wait_for

STEMDAQ = [sys.executable, "-m", "stemdaq.cli"]
API = "/api/v1"
EVENT = "/entry/measurement/event1"
DATA = f"{EVENT}/image1/image_4d/intensity"
MASK = f"{EVENT}/image1/frames/written"
FINAL = {"completed", "completed_with_gaps", "aborted", "failed"}


@dataclass
class RankedServe:
    """``stemdaq serve --ranks N`` with its ports."""

    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}{API}{path}", timeout=30)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def arm(self, **config: Any) -> dict[str, Any]:
        r = httpx.post(f"{self.url}{API}/acquisitions", json=config, timeout=60)
        assert r.status_code == 201, (
            f"arm: {r.status_code} {r.text}\n{self.log.read_text()[-3000:]}"
        )
        return r.json()

    def wait_final(self, acq_id: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (i := self.get(f"/acquisitions/{acq_id}"))["state"] in FINAL and i,
            timeout,
            f"acquisition {acq_id} to end",
            period=0.1,
        )


def end_process(proc: subprocess.Popen[Any], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` s; reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def ranked_serve(data_dir: Path, ranks: int, block_rows: int) -> Iterator[RankedServe]:
    """Start ``stemdaq serve --ranks`` on free ports; yield once the API answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "STEMDAQ_RANK_PORT": str(free_ports(ranks)),
        "STEMDAQ_FAN_PORT": str(free_ports(ranks)),
        "STEMDAQ_FAN_CONTROL_PORT": str(free_ports(1)),
        "STEMDAQ_RANK_BLOCK_ROWS": str(block_rows),
    }
    port = free_ports(1)
    log = data_dir.parent / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*STEMDAQ, "serve", "--port", str(port), "--data-dir", str(data_dir)]
            + ["--ranks", str(ranks)],
            stdout=out,
            stderr=out,
            env=env,
        )
    serve = RankedServe(proc, f"http://127.0.0.1:{port}", data_dir, log)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{serve.url}{API}/status", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    children: list[int] = []
    try:
        wait_for(up, 90, "stemdaq serve --ranks to answer", period=0.1)
        children = children_of(proc.pid)
        assert len(children) == ranks + 1, children  # the ranks and the fan
        yield serve
    finally:
        end_process(proc)
        left = wait_gone(children, 30)
        for pid in left:  # never leave them behind, but say so
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        assert not left, f"serve left its rank/fan processes running: {left}"


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            out += [int(c) for c in fh.read().split()]
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False
