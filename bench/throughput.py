"""Throughput benchmark: stemdaq against the transport limit, a naive and a minimal writer.

For each case a sender process replays pre-encoded DECTRIS stream messages as fast as ZeroMQ
takes them (:mod:`sender`) into one receiver at a time, each a fresh process:

==============  ============================================================================
transport       bare PULL loop: receive (``copy=False``) and discard; the transport limit
naive           receive, decode, ``dset[i] = frame`` through the bitshuffle-LZ4 filter
                (a tenth of the frames: it is slow)
minimal         receive, ``cbor2.loads``, ``write_direct_chunk``, one frame per chunk: the
                floor any design must beat (:mod:`minimal`)
minimal-scan    the same, image id and payload located in the CBOR bytes (stream v2 only)
minimal-k8      minimal-scan with 8 frames per chunk, blocks joined (stemdaq's default K;
                stream v2 bitshuffle-LZ4 frames of whole 8 KiB blocks only)
acquire         ``stemdaq acquire --stream ... --scan RxC --out FILE`` (passive mode)
serve           ``stemdaq serve`` + ``POST /api/v1/acquisitions``; also GET /api/v1/status
                latency during the ingest
==============  ============================================================================

frames/s runs from the first image sent to the file closed (the file's mtime: the last
write of its close; for transport, the last message received). CPU us/frame is the receiving
process's user + system CPU over that span divided by the frames: os.wait4's rusage at exit
minus a /proc/<pid>/stat sample taken before the first frame; for ``serve`` (which keeps
running) two /proc/<pid>/stat samples (see :mod:`procstat`). RSS is the receiving process's
peak (receivers are started by :mod:`launcher`, so it is their own). "exact" is a
bit-for-bit read-back of 32 frames. The scan always has exactly as many positions as frames
are sent, and the series start announces that many. Ratios compare ``acquire`` (stemdaq) with
the others; the last lines give ``ratio_vs_transport=... ratio_vs_minimal=...`` for the
192x192 stream v2 case and the status latency of each ``serve`` run. ``--soak`` runs
``acquire`` alone on 1,000,000 frames (a 1000x1000 scan of 96x96) and samples its RSS every
second, against the frames sent so far.

Usage::

    python bench/throughput.py --quick                 # small counts, about a minute
    python bench/throughput.py --cases '192x192 u16 bslz4$'   # the stream v2 case only
    python bench/throughput.py                         # the full table
    python bench/throughput.py --repeat 3              # medians of 3 runs
    python bench/throughput.py --cases 192x192 --writers minimal,acquire
    python bench/throughput.py --frames-per-chunk 8    # passed to stemdaq where it can be
    python bench/throughput.py --soak                  # 1,000,000 frames of 96x96: RSS
    python bench/throughput.py --json results.json     # every run, for later comparison
    python bench/throughput.py --ranks 1,2,4 --cases '192x192 u16 bslz4$'
        # scale-out: serve --ranks N for each N; CPU us/frame over all processes (routing
        # included) and route_us, the fan's routing thread alone (bench/ranked.py)
    python bench/throughput.py --ranks 1,2 --frames 3000 --cases '192x192 u16 bslz4$'  # smoke
    python bench/throughput.py --cases '192x192 u16 bslz4$' --writers acquire --live both

``--live``: ``on`` (stemdaq's default: the summary thread computes the live view), ``off``
(``--no-summary``) or ``both``: each ``acquire`` run is then followed by one with the live
view off (``acquire-live-off``), same case, same run, interleaved. With the live view on the
post-scan completion from the file is off (``--live-completion-seconds 0``), so frames/s is
the data path's rate; the live view's coverage during the scan (positions in its maps when the
scan ended, ``image_bf/live/frames_during_scan`` in the file) is printed per run. ``off``
applies to ``serve`` and ``--ranks`` too (``"summary": false`` in the POST body): the
scale-out runs then show what routing costs without each rank's live view and its completion
from the file at close, which with N ranks does up to N times the completion work in the same
wall time (``live_completion_seconds`` and the tenth of the scan are per rank).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import runs
from cases import CASES, SOAK, Case, select
from launcher import Launcher
from minimal import k8_applies
from ranked import measure_ranked
from results import STEMDAQ, Row, RunResult, print_table, status_line
from runs import acquire_has_frames_per_chunk, measure
from serve import measure_serve

WRITERS = ("transport", "naive", "minimal", "minimal-scan", "minimal-k8", "acquire", "serve")
LIVE_OFF = "acquire-live-off"  # stemdaq acquire with --no-summary (see --live)
LIVE_DATASET = "/entry/measurement/event1/image_bf/live/frames_during_scan"
NAIVE_SHARE = 10  # the naive writer gets a tenth of the frames (at least 200)


def frames_for(writer: str, case: Case, quick: bool, frames: int = 0) -> int:
    """Frames sent to ``writer`` in this case."""
    n = frames or (case.quick_frames if quick else case.frames)
    return max(n // NAIVE_SHARE, 200) if writer == "naive" else n


@contextlib.contextmanager
def live_view(on: bool, seen: dict[str, int]) -> Iterator[None]:
    """``stemdaq acquire`` with the live view on (no post-scan completion) or off; with it on,
    ``seen["positions"]`` gets the positions its maps held when the scan ended."""
    command, check = runs.acquire_command, runs.exact

    def acquire_command(*args: object, **kwargs: object) -> list[str]:
        extra = ["--live-completion-seconds", "0"] if on else ["--no-summary"]
        return [*command(*args, **kwargs), *extra]  # type: ignore[arg-type]

    def exact(path: Path, *args: object, **kwargs: object) -> object:
        with contextlib.suppress(OSError, KeyError), h5py.File(path, "r") as f:
            seen["positions"] = int(f[LIVE_DATASET][()])
        return check(path, *args, **kwargs)  # type: ignore[arg-type]

    runs.acquire_command, runs.exact = acquire_command, exact  # type: ignore[assignment]
    try:
        yield
    finally:
        runs.acquire_command, runs.exact = command, check


def run_one(
    launcher: Launcher,
    writer: str,
    case: Case,
    n: int,
    tmp: Path,
    k: int,
    soak: bool,
    live: str = "on",
) -> RunResult | None:
    """One measurement; None (and the reason on stderr) if it could not be made."""
    try:
        if writer.startswith("ranks="):
            return measure_ranked(case, n, tmp, ranks=int(writer[6:]), k=k, live=live != "off")
        if writer == "serve":
            return measure_serve(case, n, tmp, k=k, live=live != "off")
        if writer == LIVE_OFF or (writer == STEMDAQ and live != "on"):
            on = writer == STEMDAQ and live == "both"
            folder = tmp / ("live-on" if on else "live-off")
            folder.mkdir(exist_ok=True)
            seen: dict[str, int] = {}
            with live_view(on, seen):
                result = measure(launcher, STEMDAQ, case, n, folder, k=k, soak=soak)
            result.writer = writer
            if on:
                result.extra["live_positions"] = seen.get("positions", -1)
            return result
        return measure(launcher, writer, case, n, tmp, k=k, soak=soak)
    except Exception as exc:  # one broken run must not lose the table
        print(f"  {case.name} {writer}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small frame counts (about a minute)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (medians)")
    parser.add_argument("--soak", action="store_true", help="1,000,000 frames of 96x96, RSS")
    parser.add_argument(
        "--cases",
        default="",
        help="comma-separated substrings of case names; a trailing $ anchors at the end",
    )
    parser.add_argument(
        "--writers", default=",".join(WRITERS), help=f"comma-separated, of {', '.join(WRITERS)}"
    )
    parser.add_argument(
        "--frames-per-chunk",
        type=int,
        default=1,
        metavar="K",
        help="stemdaq's frames_per_chunk (serve: POST body; acquire: --frames-per-chunk if it "
        "has the flag); the scan row length is made a multiple of K where the frame count allows",
    )
    parser.add_argument(
        "--ranks",
        default="",
        help="comma-separated rank counts, e.g. 1,2,4: run serve --ranks N for each instead of "
        "--writers (scale-out)",
    )
    parser.add_argument("--frames", type=int, default=0, help="frames per run (overrides the case)")
    parser.add_argument(
        "--live",
        choices=("on", "off", "both"),
        default="on",
        help="stemdaq's live view: on (its default), off (--no-summary; serve and --ranks: "
        '"summary": false), or both: every acquire run followed by one with it off '
        f"({LIVE_OFF})",
    )
    parser.add_argument("--dir", type=Path, default=None, help="folder for the files (a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write every run to this file")
    args = parser.parse_args(argv)
    unknown = set(args.writers.split(",")) - set(WRITERS)
    if unknown:
        parser.error(f"unknown writers: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print the table."""
    args = parse_args(argv)
    k = args.frames_per_chunk
    if args.soak:
        cases, writers = [SOAK], [STEMDAQ]
    else:
        cases = select(args.cases)
        writers = [w for w in WRITERS if w in args.writers.split(",")]
        if args.ranks:
            writers = [f"ranks={int(r)}" for r in args.ranks.split(",")]
        if args.live == "both" and STEMDAQ in writers:
            writers.insert(writers.index(STEMDAQ) + 1, LIVE_OFF)
    if not cases:
        print(f"no case matches {args.cases!r}; cases: {[c.name for c in CASES]}", file=sys.stderr)
        return 2
    notes = []
    if k > 1 and STEMDAQ in writers and not acquire_has_frames_per_chunk():
        notes.append(
            f"stemdaq acquire has no --frames-per-chunk: acquire ran with 1, serve with {k}"
        )
    table: dict[str, dict[str, Row]] = {}
    every: list[RunResult] = []
    t_start = time.monotonic()
    launcher = Launcher()
    with tempfile.TemporaryDirectory(prefix="stemdaq-bench-", dir=args.dir) as tmpdir:
        tmp = Path(tmpdir)
        for case in cases:
            rows: dict[str, Row] = {}
            for _ in range(args.repeat):  # repeats interleaved: a load change hits all writers
                for writer in writers:
                    if writer == "minimal-scan" and case.protocol != "stream2":
                        continue
                    if writer == "minimal-k8" and not k8_applies(case):
                        continue
                    n = frames_for(writer, case, args.quick, args.frames)
                    result = run_one(launcher, writer, case, n, tmp, k, args.soak, args.live)
                    if result is None:
                        continue
                    every.append(result)
                    rows.setdefault(writer, Row(case, writer, [])).runs.append(result)
                    if "live_positions" in result.extra:
                        print(
                            f"  {case.name:22s} live view covered "
                            f"{result.extra['live_positions']:,} of {n:,} positions during "
                            "the scan",
                            file=sys.stderr,
                        )
                    print(
                        f"  {case.name:22s} {writer:12s} {result.fps:>9,.0f} frames/s "
                        f"{result.cpu_us:>7.1f} us/frame  lost {result.lost}  "
                        f"rss {result.rss_mb:.0f} MB  exact {result.exact}  {result.state}"
                        + (
                            f"  route {result.extra['route_us']:.1f} us/frame"
                            if "route_us" in result.extra
                            else ""
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
                    if "by_process" in result.extra:
                        split = ", ".join(
                            f"{role} {us:.1f}" for role, us in result.extra["by_process"].items()
                        )
                        print(f"  {'':22s} CPU us/frame by process: {split}", file=sys.stderr)
            table[case.name] = rows
    launcher.close()
    print_table(table)
    for rows in table.values():
        if "serve" in rows:
            line = status_line(rows["serve"].median)
            if line:
                print(line)
    for rows in table.values():
        chunks = {w: r.median.chunks for w, r in rows.items() if w in (STEMDAQ, "serve")}
        if k > 1 and chunks:
            notes.append(f"{next(iter(rows.values())).case.name}: chunks {chunks}")
    for name, rows in table.items():
        on, off = rows.get(STEMDAQ), rows.get(LIVE_OFF)
        if on is not None and off is not None and off.median.fps:
            covered = [r.extra.get("live_positions", -1) for r in on.runs]
            print(
                f"live view {name}: on/off = {on.median.fps / off.median.fps:.2f} "
                f"({on.median.fps:,.0f} vs {off.median.fps:,.0f} frames/s); positions covered "
                f"during the scan: {covered} of {on.median.frames_sent:,}"
            )
    for note in notes:
        print(f"note: {note}")
    if args.soak:
        for rows in table.values():
            timeline = rows[STEMDAQ].median.extra.get("rss_timeline", []) if rows else []
            step = max(1, len(timeline) // 15)
            print(
                "soak RSS (frames sent: MB):",
                ", ".join(f"{sent:,}: {rss:.0f}" for _, sent, rss in timeline[::step]),
            )
    print(f"(benchmark wall time {time.monotonic() - t_start:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in every], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
