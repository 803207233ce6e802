"""Where ``stemdaq acquire`` spends its CPU per frame: py-spy over one benchmark run, by stage.

Runs ``stemdaq acquire --stream`` (the entry point users run) under ``py-spy record`` against
the benchmark's sender (:mod:`sender`, DECTRIS-layout messages), then attributes every sample
to a stage of the per-frame path by the stemdaq function it was taken in::

    python bench/perframe.py                          # 192x192 u16 bslz4, 200,000 frames
    python bench/perframe.py --case '512x512 u16 bslz4' --frames 40000
    python bench/perframe.py --raw /tmp/acquire.txt   # keep py-spy's raw samples
    python bench/perframe.py --threads                # no py-spy: the kernel's CPU per thread

Each stage's share of the samples times the process CPU per frame (``/proc`` before the first
frame, ``wait4`` at exit: as :mod:`procstat`) approximates its microseconds per frame. py-spy
samples only threads that run Python (and, with ``--nonblocking``, counts a thread waiting for
the GIL as running), so the shares are approximate; ZeroMQ's I/O thread is not sampled.
py-spy itself slows the run a little; ``throughput.py`` gives the frames/s.

``--threads`` runs without py-spy and reads each thread's CPU from the kernel instead
(``/proc/<pid>/task/*/stat`` every 20 ms; stemdaq's threads carry their names to the kernel,
:mod:`stemdaq.threadnames`): exact per thread, ZeroMQ's I/O thread included, but not by stage.
Threads that ended before the last sample (the page-cache syncs) and the last 20 ms show as
"ended threads and the last samples" (the process total from ``wait4`` less the rest).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import procstat
from cases import CASES, Case, by_name
from runs import acquire_command, child_env, free_endpoint
from sender import Sender

SRC = Path(__file__).resolve().parents[1] / "service" / "stemdaq"


def _lines(rel: str, first: str, last: str | None = None) -> str:
    """A regex for py-spy frames of ``rel`` at the lines holding ``first`` (through ``last``).

    Found in the source at run time, so that the stages follow the code as it changes. C calls
    (h5py's ``write_direct_chunk``) show in py-spy as the Python line that makes them.
    """
    text = (SRC / rel).read_text().splitlines()
    hits = [i + 1 for i, line in enumerate(text) if first in line]
    if last is not None and hits:
        end = next(i + 1 for i, line in enumerate(text) if i >= hits[0] and last in line)
        hits = list(range(hits[0], end + 1))
    name = re.escape(Path(rel).name)
    return rf"{name}:({'|'.join(map(str, hits)) or 'none'})\)"


#: (stage, markers): a sample belongs to the first stage one of whose markers (regular
#: expressions) matches a frame of its stack, so HDF5 calls made while flushing count as
#: "flush", not as "chunk write".
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("close (file, summaries, live completion)", ("NexusWriter.close", "Acquisition._finish")),
    ("open (file, datasets, live view)", ("open_file", "DataPath._open_series")),
    ("flush (bookkeeping, SWMR)", ("NexusWriter.flush", "NexusWriter._flush_checked")),
    (
        "HDF5 chunk write",
        (
            _lines("writer/chunking.py", "write_direct_chunk("),
            _lines("writer/nexus.py", "write_direct_chunk("),
        ),
    ),
    ("chunk assembly + marks", ("RowChunker", "Bookkeeping.mark")),
    (
        "decode: bslz4 block walk",
        (_lines("receiver/fast2.py", "for _ in range(n_iter)", "leftover != pos"), "check_bslz4"),
    ),
    ("decode: header + Frame", ("FastImageDecoder", "StreamDecoder", "decode_cbor", "fast1")),
    ("place (series, position)", ("SeriesTracker",)),
    ("summary offer", ("SummaryAccumulator.offer",)),
    (
        "write call + counters",
        ("NexusWriter.write", "DataPath._store", "DataPath._write", "Accounts.wrote"),
    ),
    (
        "in-order lane (C: read, place, copy; chunk write + marks above)",
        (_lines("rank/datapath.py", "taken = push(parts)"), "InOrderLane"),
    ),
    ("receive (zmq recv, loop)", ("DataPath._run", "DataPath.run")),
]


def stage_of(stack: str) -> str:
    for name, markers in STAGES:
        if any(re.search(m, stack) for m in markers):
            return name
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default=CASES[0].name)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--raw", type=Path, help="keep py-spy's raw (collapsed) samples here")
    ap.add_argument("--threads", action="store_true", help="kernel CPU per thread, no py-spy")
    args = ap.parse_args()
    case, n = by_name(args.case), args.frames
    if args.threads:
        by_thread(case, n)
        return
    with tempfile.TemporaryDirectory(prefix="stemdaq-profile-") as tmp:
        raw = args.raw or Path(tmp) / "samples.txt"
        out = Path(tmp) / "profile.nxs"
        endpoint = free_endpoint()
        sender = Sender(endpoint, case, n)
        sender.start()
        proc = subprocess.Popen(
            acquire_command(endpoint, case, n, out, k=8),
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sender.wait_connected(lambda: proc.poll() is None)
        spy = subprocess.Popen(
            ["py-spy", "record", "-r", str(args.rate), "--threads", "--nonblocking"]
            + ["-f", "raw", "-o", str(raw), "--pid", str(proc.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attached
        cpu0 = procstat.cpu_seconds(proc.pid)
        sender.release()
        _, status, usage = os.wait4(proc.pid, 0)
        sender.finish()
        spy.wait(timeout=60)
        cpu = usage.ru_utime + usage.ru_stime - cpu0
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"stemdaq acquire exited {os.waitstatus_to_exitcode(status)}")
        per_thread: Counter[str] = Counter()
        stages: Counter[str] = Counter()
        skipped = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():  # a sample py-spy cut short (seen on a loaded machine)
                skipped += 1
                continue
            thread = stack.split(";", 1)[0]
            name = thread.split(": ", 1)[1] if ": " in thread else "(thread without a name)"
            per_thread[name] += int(count)
            if name.startswith("stemdaq-data"):
                stages[stage_of(stack)] += int(count)
        if skipped:
            print(f"({skipped} py-spy lines without a sample count were left out)")
    total = sum(per_thread.values())
    us = cpu / n * 1e6
    print(f"{case.name}: {n} frames; process CPU {us:.1f} us/frame (py-spy attached)")
    print(f"{'where':44} {'samples':>8} {'share':>6} {'~us/frame':>9}")

    def row(label: str, count: int) -> None:
        print(f"{label:44} {count:8d} {count / total:6.1%} {count / total * us:9.1f}")

    for name, _ in [*STAGES, ("other", ())]:
        if stages[name]:
            row("  data thread: " + name, stages[name])
    row("data thread, all", sum(stages.values()))
    for name, count in per_thread.most_common():
        if not name.startswith("stemdaq-data"):
            row(name, count)
    print("(~us/frame: share of the samples x process CPU; ZeroMQ's I/O thread is not sampled,")
    print(" so every row is a little high, by its share of the transport's ~6 us/frame)")


def by_thread(case: Case, n: int) -> None:
    """One ``stemdaq acquire`` run; its CPU per frame by thread, from the kernel."""
    with tempfile.TemporaryDirectory(prefix="stemdaq-threads-") as tmp:
        endpoint = free_endpoint()
        sender = Sender(endpoint, case, n)
        sender.start()
        proc = subprocess.Popen(
            acquire_command(endpoint, case, n, Path(tmp) / "threads.nxs", k=8),
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sender.wait_connected(lambda: proc.poll() is None)
        first = procstat.thread_cpu(proc.pid)
        cpu0 = procstat.cpu_seconds(proc.pid)
        sender.release()
        last = dict(first)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            last.update(procstat.thread_cpu(proc.pid))
            time.sleep(0.02)
        sender.finish()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"stemdaq acquire exited {os.waitstatus_to_exitcode(status)}")
    total = usage.ru_utime + usage.ru_stime - cpu0
    per: Counter[str] = Counter()
    for tid, (name, cpu) in last.items():
        group = re.sub(r"-[0-9a-f]{1,8}$", "", name) if name.startswith("stemdaq-") else name
        per[group] += cpu - first.get(tid, (name, 0.0))[1]
    rest = total - sum(per.values())
    print(f"{case.name}: {n} frames; process CPU {total / n * 1e6:.1f} us/frame (no profiler)")
    print(f"{'thread (kernel name)':40} {'CPU s':>7} {'us/frame':>9}")
    for name, cpu in [*per.most_common(), ("ended threads and the last samples", rest)]:
        print(f"{name:40} {cpu:7.2f} {cpu / n * 1e6:9.1f}")


if __name__ == "__main__":
    main()
