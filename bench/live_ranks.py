"""What the ranked live view's polling costs: bytes and milliseconds per fetch from a rank.

Starts ``stemdaq sim`` and ``stemdaq serve --ranks 2`` (the test fixtures of ``tests/ranks``),
runs one scan and, while it runs, fetches from every rank what the service's
``RankedLiveEngine`` fetches (``GET /rank/live/maps.npz?since=V``, the rows changed since the
version last seen) at the same rate; then a fetch of every owned row (as after a geometry
change), one with nothing changed, and the summed pattern.

Usage::

    python bench/live_ranks.py                       # 64x64 scan, 64x64 frames, 2 ranks
    python bench/live_ranks.py --scan 128x128 --ranks 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests")]
import ranks.conftest as rc  # noqa: E402
from sim_cli import sim_cli  # noqa: E402


def _pair(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def _fetch(c: httpx.Client, url: str, since: int) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    r = c.get(f"{url}/rank/live/maps.npz", params={"since": since})
    ms = (time.perf_counter() - t0) * 1e3
    if r.status_code != 200:
        return since, 0, ms
    return int(np.load(io.BytesIO(r.content))["version"]), len(r.content), ms


def main() -> None:
    """Run one scan and print the fetch costs."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scan", type=_pair, default=(64, 64))
    p.add_argument("--frame", default="64x64")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--hz", type=float, default=5.0, help="fetch rounds per second")
    a = p.parse_args()
    sim_args = ("--frame-shape", a.frame, "--frame-time", "0.0005")
    with tempfile.TemporaryDirectory() as tmp, sim_cli(*sim_args) as (rest, stream):
        with rc.ranked_serve(Path(tmp) / "data", a.ranks, 2) as serve:
            info = serve.arm(
                detector_url=rest,
                stream_endpoint=stream,
                scan_shape=list(a.scan),
                file_template="bench.nxs",
            )
            urls = [r["url"] for r in info["ranks"]]
            since = [-1] * len(urls)
            sizes, times = [], []
            with httpx.Client(timeout=10) as c:
                while serve.get(f"/acquisitions/{info['id']}")["state"] not in rc.FINAL:
                    for i, url in enumerate(urls):
                        since[i], n, ms = _fetch(c, url, since[i])
                        if n:
                            sizes.append(n)
                            times.append(ms)
                    time.sleep(1.0 / a.hz)
                full = [_fetch(c, u, -1)[1:] for u in urls for _ in range(10)]
                idle = [_fetch(c, u, 1 << 40)[1:] for u in urls for _ in range(10)]
                t0 = time.perf_counter()
                pattern = c.get(f"{urls[0]}/rank/live/sum_pattern.npy").content
                pattern_ms = (time.perf_counter() - t0) * 1e3
    if sizes:
        print(
            f"during the scan: {len(sizes)} fetches, bytes median {statistics.median(sizes):.0f}"
            f" max {max(sizes)}, ms median {statistics.median(times):.2f} max {max(times):.2f}"
        )
    for name, rows in (("every owned row", full), ("nothing changed", idle)):
        print(
            f"{name}: {statistics.median(r[0] for r in rows):.0f} bytes, "
            f"{statistics.median(r[1] for r in rows):.2f} ms"
        )
    print(f"summed pattern: {len(pattern)} bytes, {pattern_ms:.2f} ms")


if __name__ == "__main__":
    main()
