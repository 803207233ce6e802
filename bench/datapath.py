"""The data thread alone: stemdaq's per-frame path in one process, no sender on the cores.

The benchmark's stream messages (:mod:`sender`; v2 in the DECTRIS layout, v1 multipart JSON)
are queued first on an ``inproc://`` ZeroMQ socket (no I/O thread, no network), then a real
:class:`~stemdaq.rank.datapath.DataPath` with a real :class:`~stemdaq.writer.NexusWriter` (file
in ``--dir``) receives, decodes, places and writes them, as in ``stemdaq acquire``. Reported:
the data thread's CPU (``time.thread_time``) per frame, medians over ``--repeat`` runs, each a
fresh process::

    python bench/datapath.py                          # 192x192 u16 bslz4, 50,000 frames
    python bench/datapath.py --dry                    # the same without the HDF5 chunk writes
    python bench/datapath.py --no-lane                # every frame the Python path
    python bench/datapath.py --profile                # cProfile of one run, by own time
    python bench/datapath.py --case '512x512 u16 bslz4' --frames 10000
    python bench/datapath.py --case '192x192 u16 bslz4 v1'   # stream v1 (multipart JSON)

``--dry`` leaves out ``write_direct_chunk`` (and with it the kernel's copy into the page cache):
what is left is the Python and C of the per-frame path, the part stemdaq's code decides. This
is a tool for A/B comparisons of that path (interleave runs of two checkouts with
``PYTHONPATH=<checkout>/service``); the throughput table is :mod:`throughput`'s. The frames
were queued long before they are read, so they come from memory, not the caches, as frames
from the network do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cases import CASES, by_name, scan_shape

HERE = Path(__file__).resolve().parent


def _dry() -> None:
    """Leave out the HDF5 chunk writes: every RowChunker gets datasets that take no chunk."""
    from stemdaq.writer import chunking

    class NoWrite:
        def __init__(self, dsid: Any) -> None:
            self._dsid = dsid

        def write_direct_chunk(self, *args: Any) -> None:
            return None

        def __getattr__(self, name: str) -> Any:
            return getattr(self._dsid, name)

    init = chunking.RowChunker.__init__

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._dsids = [NoWrite(d) for d in self._dsids]

    chunking.RowChunker.__init__ = patched  # type: ignore[method-assign]


def one_run(
    case_name: str, n: int, k: int, folder: str, dry: bool, profile: bool, lane: bool = True
) -> dict:
    """One run in this process: queue the series, run the data path, measure its thread."""
    import zmq
    from sender import V1_OFFSET, V1_SLOT, v1_messages, v2_messages
    from stemdaq.config import AcquisitionConfig
    from stemdaq.rank.datapath import DataPath, Signals
    from stemdaq.receiver import ZmqSource
    from stemdaq.writer import NexusWriter

    if dry:
        _dry()
    case = by_name(case_name)
    rows, cols = scan_shape(n, k)
    endpoint = "inproc://stemdaq-bench"
    cfg = AcquisitionConfig(
        scan_shape=(rows, cols),
        stream_endpoint=endpoint,
        min_free_mb=10,
        end_timeout=2.0,
        frames_per_chunk=k,
    )
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.bind(endpoint)
    source = ZmqSource(endpoint, rcvhwm=0)
    if case.protocol == "stream2":
        start, templates, offsets, end = v2_messages(case, n)
        push.send(start)
        pack = struct.Struct(">I").pack_into
        for i in range(n):
            msg = templates[i % len(templates)]
            pack(msg, offsets[i % len(templates)], i)
            push.send(msg)  # copied: the template is patched again
    else:  # stream v1: four parts per image, as the sender sends them
        header, frames, end = v1_messages(case, n)
        push.send_multipart(header)
        cfg_part = b'{"htype":"dconfig-1.0","start_time":0,"stop_time":100000,"real_time":100000}'
        for i in range(n):
            head, d, blob = frames[i % len(frames)]
            head[V1_OFFSET : V1_OFFSET + V1_SLOT] = b"%*d" % (V1_SLOT, i)
            push.send_multipart([head, d, blob, cfg_part])
    push.send(end)
    writer = NexusWriter(Path(folder) / f"datapath-{os.getpid()}.nxs", cfg, validate_framing=False)
    path = DataPath(cfg, writer, Signals(), name="bench", lane=lane)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.thread_time()
    state, _ = path.run(source)
    path.write_pending()
    cpu = time.thread_time() - t0
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    written = path.counters(final=False).frames_written
    taken = path.lane.frames if path.lane is not None else 0
    writer.tmp_path.unlink(missing_ok=True)
    return {"state": state.value, "written": written, "us_per_frame": 1e6 * cpu / n, "lane": taken}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default=CASES[0].name)
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--frames-per-chunk", type=int, default=8, dest="k")
    ap.add_argument("--repeat", type=int, default=5, help="runs (fresh processes); medians")
    ap.add_argument("--dry", action="store_true", help="no HDF5 chunk writes (see the doc)")
    ap.add_argument("--profile", action="store_true", help="cProfile one run (stderr)")
    ap.add_argument(
        "--no-lane", action="store_false", dest="lane", help="no in-order lane (stemdaq.rank.lane)"
    )
    ap.add_argument("--dir", default=None, help="folder for the files (a temp dir)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="stemdaq-datapath-", dir=args.dir) as folder:
        if args.child or args.profile:
            result = one_run(
                args.case, args.frames, args.k, folder, args.dry, args.profile, args.lane
            )
            print(json.dumps(result))
            return
        runs = []
        for _ in range(args.repeat):
            cmd = [sys.executable, str(HERE / "datapath.py"), "--child", "--case", args.case]
            cmd += ["--frames", str(args.frames), "--frames-per-chunk", str(args.k)]
            cmd += ["--dir", folder] + (["--dry"] if args.dry else [])
            cmd += [] if args.lane else ["--no-lane"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        per_frame = [r["us_per_frame"] for r in runs]
        ok = all(r["written"] == args.frames and r["state"] == "completed" for r in runs)
        what = "without HDF5 chunk writes" if args.dry else "with HDF5 chunk writes"
        lane = f"in-order lane took {runs[0]['lane']} frames" if args.lane else "no lane"
        print(f"{args.case}, {args.frames} frames, K={args.k}, {what}, {lane}")
        print("data thread CPU us/frame per run: " + " ".join(f"{x:.2f}" for x in per_frame))
        print(
            f"median {statistics.median(per_frame):.2f}  min {min(per_frame):.2f}  "
            f"all frames written: {ok}"
        )
        if not ok:
            sys.exit("a run did not write every frame: " + json.dumps(runs))


if __name__ == "__main__":
    main()
