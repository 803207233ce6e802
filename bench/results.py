"""One measurement's result, medians over repeats, and the printed table with its ratios."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from cases import HEADLINE, Case

#: the writer whose numbers are "stemdaq" in the ratios (the CLI users run)
STEMDAQ = "acquire"


@dataclass
class RunResult:
    """One receiver, one case, one run.

    ``seconds`` runs from the first image sent (sender's clock) to the file closed (the
    output file's mtime, i.e. the last write of its close) or, for ``transport``, to the
    last message received. ``cpu_seconds`` is the receiving process's user + system CPU over
    the same span (see :mod:`procstat`).
    """

    case: str
    writer: str
    frames_sent: int
    frames: int  # written to the file (received, for transport)
    seconds: float
    cpu_seconds: float
    rss_mb: float  # peak resident set of the receiving process
    file_bytes: int = 0
    exact: bool | None = None  # bit-for-bit read-back of a sample of frames
    chunks: tuple[int, ...] | None = None  # the chunk shape of the frames' dataset
    state: str = ""  # stemdaq's final state
    seconds_to_exit: float = 0.0  # first image to the receiving process's exit (if it exits)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Frames per second, first image sent to file closed."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        """CPU microseconds per frame of the receiving process."""
        return self.cpu_seconds / self.frames * 1e6 if self.frames else float("nan")

    @property
    def lost(self) -> int:
        """Frames sent that are not in the file."""
        return self.frames_sent - self.frames

    def as_dict(self) -> dict[str, Any]:
        """All fields and the derived numbers, for ``--json``."""
        return {**asdict(self), "fps": self.fps, "cpu_us": self.cpu_us, "lost": self.lost}


@dataclass
class Row:
    """The median of the repeats of one (case, writer)."""

    case: Case
    writer: str
    runs: list[RunResult]

    @property
    def median(self) -> RunResult:
        """The run with the median frames/s (its other columns are shown)."""
        ordered = sorted(self.runs, key=lambda r: r.fps)
        return ordered[len(ordered) // 2]

    @property
    def fps(self) -> float:
        """Median frames/s."""
        return statistics.median(r.fps for r in self.runs)

    @property
    def cpu_us(self) -> float:
        """Median CPU us per frame."""
        return statistics.median(r.cpu_us for r in self.runs)


HEADER = (
    f"{'case':22s} {'writer':12s} {'frames':>7s} {'frames/s':>9s} {'CPU us/fr':>9s} "
    f"{'MB/s raw':>8s} {'GB out':>6s} {'lost':>5s} {'RSS MB':>6s} {'exact':>5s}"
)


def format_row(row: Row) -> str:
    """One table line."""
    r = row.median
    mbs = row.fps * row.case.frame_nbytes / 1e6
    exact = "" if r.exact is None else str(r.exact)
    return (
        f"{row.case.name:22s} {row.writer:12s} {r.frames:>7d} {row.fps:>9,.0f} "
        f"{row.cpu_us:>9.1f} {mbs:>8,.0f} {r.file_bytes / 1e9:>6.2f} {r.lost:>5d} "
        f"{r.rss_mb:>6.0f} {exact:>5s}"
    )


def ratios(rows: dict[str, Row]) -> tuple[list[str], dict[str, float]]:
    """Lines ``stemdaq/transport=... stemdaq/naive=... stemdaq/minimal=...`` for one case.

    stemdaq is ``acquire``. A second line compares its CPU per frame with ``minimal``'s and
    the rate of ``serve`` with ``acquire``'s. Returns the lines and the rate ratios.
    """
    if STEMDAQ not in rows or rows[STEMDAQ].fps <= 0:
        return [], {}
    ours = rows[STEMDAQ]
    rates: dict[str, float] = {}
    for other in ("transport", "naive", "minimal", "minimal-scan", "minimal-k8"):
        if other in rows and rows[other].fps > 0:
            rates[other] = ours.fps / rows[other].fps
    second = []
    for other in ("minimal", "minimal-scan", "minimal-k8"):
        if other in rows and rows[other].cpu_us > 0:
            second.append(f"CPU/frame stemdaq/{other}={ours.cpu_us / rows[other].cpu_us:.2f}")
    if "serve" in rows:
        second.append(f"serve/{STEMDAQ}={rows['serve'].fps / ours.fps:.2f}")
    lead = f"{'':22s} {'ratio':12s} "
    lines = ["  ".join(f"stemdaq/{k}={v:.2f}" for k, v in rates.items()), "  ".join(second)]
    return [lead + line for line in lines if line], rates


def print_table(table: dict[str, dict[str, Row]]) -> None:
    """The table, ratio lines per case, and the headline ratios of the 192x192 case."""
    print(HEADER)
    print("-" * len(HEADER))
    headline: dict[str, float] = {}
    for case_name, rows in table.items():
        for row in rows.values():
            print(format_row(row))
        lines, rates = ratios(rows)
        for line in lines:
            print(line)
        if case_name == HEADLINE:
            headline = rates
    print(f"(stemdaq = {STEMDAQ}; frames/s: first image sent to file closed)")
    if headline:
        print(
            f"ratio_vs_transport={headline.get('transport', float('nan')):.2f} "
            f"ratio_vs_minimal={headline.get('minimal', float('nan')):.2f}"
        )


def status_line(result: RunResult) -> str | None:
    """GET /api/v1/status latency during the service's run, as one line."""
    lat = result.extra.get("status")
    if not lat:
        return None
    return (
        f"status during full-rate ingest ({result.case}: {result.frames}/{result.frames_sent} "
        f"frames, {result.state}): {lat['requests']} requests, p50 {lat['p50_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
    )
