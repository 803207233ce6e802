"""The ranks' counters and end states, added up into one acquisition's.

Expected, received, written and dropped frames add up over ranks (each counts only the
positions it owns). Stream messages every rank sees (start, end) are counted once. At close the
master's merged written mask is the truth for ``frames_written``; the frames of a lost rank that
are not in its file are ``gaps`` no drop explains, so they are ``frames_missing``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stemdaq.config import AcquisitionConfig
from stemdaq.models import EXTRA_DROPS, AcquisitionState, Counters

_SUMMED = (
    "frames_received",
    "frames_written",
    "bytes_received",
    "bytes_written",
    "summary_frames",
    "summary_cpu_seconds",
)


def merge_counters(
    config: AcquisitionConfig,
    statuses: Sequence[Mapping[str, Any] | None],
    fan: Mapping[str, Any],
    *,
    final: bool,
    per_rank: Sequence[int] | None = None,
) -> Counters:
    """One :class:`Counters` for the acquisition (``per_rank``: frames in each rank file)."""
    out: dict[str, Any] = dict.fromkeys(_SUMMED, 0)
    dropped: dict[str, int] = {}
    channels = 1
    ignored = 0
    for status in statuses:
        c = (status or {}).get("counters") or {}
        channels = max(channels, len((status or {}).get("channels") or [""]))
        for name in _SUMMED:
            out[name] += c.get(name, 0)
        for reason, n in (c.get("dropped") or {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
        ignored = max(ignored, c.get("messages_ignored", 0))
    lost = sum(fan.get("dropped") or [])
    if lost:
        dropped["rank_lost"] = dropped.get("rank_lost", 0) + lost
    expected = config.n_positions * channels
    if per_rank is not None:
        out["frames_written"] = sum(per_rank)
    gaps = max(0, expected - out["frames_written"]) if final else 0
    for_scan = sum(n for reason, n in dropped.items() if reason not in EXTRA_DROPS)
    return Counters(
        frames_expected=expected,
        frames_dropped=sum(dropped.values()),
        dropped=dropped,
        messages_ignored=ignored,
        frames_missing=max(0, gaps - for_scan),
        gaps=gaps,
        summary_grid_step=1,
        **out,
    )


def merge_state(
    statuses: Sequence[Mapping[str, Any] | None],
    lost: Mapping[int, str],
    aborted: bool,
    error: str | None,
) -> AcquisitionState:
    """``failed`` if a rank was lost or failed, else ``aborted``, else the weakest outcome."""
    states = [AcquisitionState((s or {}).get("state", "failed")) for s in statuses]
    if lost or error or AcquisitionState.FAILED in states:
        return AcquisitionState.FAILED
    if aborted or AcquisitionState.ABORTED in states:
        return AcquisitionState.ABORTED
    if all(s is AcquisitionState.COMPLETED for s in states):
        return AcquisitionState.COMPLETED
    return AcquisitionState.COMPLETED_WITH_GAPS
