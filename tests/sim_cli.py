"""``stemdaq sim`` as a real process on free ports, for tests of every package."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

STEMDAQ = [sys.executable, "-m", "stemdaq.cli"]


@contextmanager
def sim_cli(*args: str) -> Iterator[tuple[str, str]]:
    """``stemdaq sim --rest-port 0 --stream-port 0 ARGS``; yields (SIMPLON URL, stream endpoint)
    once it printed its ports; terminated (then killed) on exit."""
    proc = subprocess.Popen(
        [*STEMDAQ, "sim", "--rest-port", "0", "--stream-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"rest_port=(\d+) stream_port=(\d+)", line)
        if not m:
            err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
            raise AssertionError(f"sim did not report its ports: {line!r} {err}")
        yield f"http://127.0.0.1:{m[1]}", f"tcp://127.0.0.1:{m[2]}"
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)  # also closes the pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
