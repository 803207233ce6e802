"""The client stays importable without the bluesky extra; the device says what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = """
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ophyd_async", "bluesky", "event_model"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""

CHECK = """
import stemdaq_client
from stemdaq_client import AsyncClient, Client, file_template_for
assert file_template_for("runs/a", "x{1}.nxs") == "runs/a/x{{1}}.nxs"
try:
    import stemdaq_client.ophyd
except ImportError as exc:
    print("MESSAGE:", exc)
else:
    raise SystemExit("stemdaq_client.ophyd imported without ophyd_async")
assert not any(m.split(".")[0] in ("ophyd_async", "bluesky") for m in sys.modules)
"""


def test_client_imports_without_the_bluesky_extra() -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'clients'}{os.pathsep}{ROOT / 'service'}"}
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER + CHECK],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    message = out.stdout.split("MESSAGE:", 1)[1]
    assert "pip install 'stemdaq[bluesky]'" in message
    assert "ophyd_async" in message or "bluesky" in message or "event_model" in message
