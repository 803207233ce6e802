"""How an acquisition ended, said truly: the end state and what the file really holds.

``completed`` only when every scan position is in the file and the series ended with its end
message; otherwise ``completed_with_gaps`` with the reasons as warnings (stopped, gaps, drops,
no end message). After a failure the file is checked in a time-bounded child process, and the
counters say what it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from stemdaq.models import AcquisitionState, Counters
from stemdaq.rank.datapath import NO_END
from stemdaq.writer import probe_file

logger = logging.getLogger(__name__)

STOPPED = "stopped on request"
VERIFY_TIMEOUT = 60.0  # seconds for the check of a file after a failure


def end_state(
    state: AcquisitionState,
    counters: Counters,
    *,
    stopped: bool,
    data_warnings: Sequence[str],
    drop_summary: str | None,
) -> tuple[AcquisitionState, list[str]]:
    """The final state and the warnings that explain it."""
    notes: list[str] = []
    if stopped and state is AcquisitionState.COMPLETED:
        notes.append(
            f"{STOPPED}: {counters.frames_written} of {counters.frames_expected} frames recorded"
        )
    if counters.gaps:
        dropped = counters.gaps - counters.frames_missing
        notes.append(
            f"{counters.gaps} of {counters.frames_expected} frames missing (gaps in the "
            f"file: written = 0): {counters.frames_missing} never received"
            + (f", {dropped} dropped" if dropped > 0 else "")
        )
    if drop_summary:
        notes.append(drop_summary)
    no_end = any(w.startswith(NO_END) for w in data_warnings)
    if state is AcquisitionState.COMPLETED and (counters.gaps or no_end):
        state = AcquisitionState.COMPLETED_WITH_GAPS
    return state, notes


def verify_after_failure(path: Path, counters: Counters) -> tuple[Counters, list[str]]:
    """Check that every frame the file's written mask claims has its chunk; return the counters
    of what the file holds and the warnings to add."""
    probe = probe_file(path, timeout=VERIFY_TIMEOUT, verify="index")
    if not probe.readable:
        return counters, [f"the file could not be verified after the failure: {probe.error}"]
    notes: list[str] = []
    verified = sum(im.frames_verified or 0 for im in probe.images)
    claimed = probe.frames_claimed
    if verified < claimed:
        notes.append(
            f"{claimed - verified} frames the file's written mask claims have no data in "
            f"{path.name}: treat them as gaps"
        )
        logger.error("%s: %d claimed frames unreadable", path.name, claimed - verified)
    if verified != counters.frames_written:
        counters = counters.model_copy(
            update={
                "frames_written": verified,
                "gaps": max(0, counters.frames_expected - verified),
                "frames_missing": max(
                    0, counters.frames_missing + counters.frames_written - verified
                ),
            }
        )
    return counters, notes
