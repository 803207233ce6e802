"""Starts the receivers from a small process, so that their peak RSS is their own.

Linux records the peak RSS of the process image an ``exec`` replaces in the child's
``ru_maxrss``: a receiver forked (or vforked) from the driver, which holds numpy, h5py and the
frames it read back, would report at least the driver's peak. This launcher is a fresh Python
with the standard library only (about 15 MB); it forks and execs each receiver, reaps it with
``os.wait4`` and sends back its rusage. Run as a script it serves commands, one JSON line each,
on stdin::

    {"argv": [...], "env": {...}, "log": "/path"}   ->  {"pid": N}, later
    {"pid": N, "returncode": 0, "cpu_seconds": ..., "max_rss_mb": ..., "t_exit": ...}

:class:`Launcher` is the driver's side.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Exited:
    """How a receiver ended (its whole life, from ``os.wait4``)."""

    returncode: int
    cpu_seconds: float  # user + system
    max_rss_mb: float  # peak resident set (ru_maxrss)
    t_exit: float  # time.time() when wait4 returned
    rss_timeline: list[tuple[float, int, float]] = field(default_factory=list)


def _serve() -> None:
    """The launcher process: spawn, reap, report; until stdin closes."""
    for line in sys.stdin:
        cmd = json.loads(line)
        with open(cmd["log"], "wb") as log:
            proc = subprocess.Popen(
                cmd["argv"], env=cmd["env"], stdout=log, stderr=subprocess.STDOUT
            )
        print(json.dumps({"pid": proc.pid}), flush=True)
        _, status, usage = os.wait4(proc.pid, 0)
        t_exit = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        report = {
            "pid": proc.pid,
            "returncode": proc.returncode,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024,
            "t_exit": t_exit,
        }
        print(json.dumps(report), flush=True)


class Launcher:
    """The driver's handle on the launcher process (one receiver at a time)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid: int | None = None  # the running receiver
        self._exited: Exited | None = None

    def spawn(self, argv: list[str], env: dict[str, str], log: Path) -> int:
        """Start a receiver (stdout and stderr to ``log``); returns its pid."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._exited = None
        self._proc.stdin.write(json.dumps({"argv": argv, "env": env, "log": str(log)}) + "\n")
        self.pid = int(json.loads(self._proc.stdout.readline())["pid"])
        return self.pid

    def poll(self, timeout: float = 0.0) -> Exited | None:
        """The receiver's exit report, if it came within ``timeout`` seconds."""
        assert self._proc.stdout is not None
        if self._exited is None and select.select([self._proc.stdout], [], [], timeout)[0]:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError("the launcher died")
            r = json.loads(line)
            self._exited = Exited(r["returncode"], r["cpu_seconds"], r["max_rss_mb"], r["t_exit"])
        return self._exited

    def alive(self) -> bool:
        """True while the receiver runs."""
        return self.poll() is None

    def wait(
        self,
        timeout: float,
        sample_every: float | None = None,
        progress: Callable[[], int] | None = None,
        rss: Callable[[int], float] | None = None,
    ) -> Exited:
        """Wait for the receiver's exit; optionally sample ``(s, progress(), rss(pid))``.

        On timeout the receiver is killed and :class:`TimeoutError` raised.
        """
        t0 = time.monotonic()
        timeline: list[tuple[float, int, float]] = []
        period = sample_every or timeout
        while True:
            if sample_every is not None and self.pid is not None and rss is not None:
                done = progress() if progress is not None else 0
                timeline.append((time.monotonic() - t0, done, rss(self.pid)))
            exited = self.poll(min(period, max(0.0, t0 + timeout - time.monotonic())))
            if exited is not None:
                exited.rss_timeline = timeline
                return exited
            if time.monotonic() - t0 >= timeout:
                self.kill()
                raise TimeoutError(f"receiver still running after {timeout:g} s: killed")

    def kill(self) -> None:
        """Kill the running receiver and collect its exit report."""
        if self.pid is not None and self.poll() is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
            self.poll(30)

    def close(self) -> None:
        """End the launcher."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(30)


if __name__ == "__main__":
    _serve()
