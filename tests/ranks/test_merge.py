"""The ranks' counters and end states added up (control/merge.py), and the rank index rule."""

from __future__ import annotations

from stemdaq.config import AcquisitionConfig
from stemdaq.control.merge import merge_counters, merge_state
from stemdaq.models import AcquisitionState
from stemdaq.rank.server import rank_index_from_host

CONFIG = AcquisitionConfig(scan_shape=(6, 4))


def _status(state: str, written: int, dropped: dict[str, int] | None = None) -> dict:
    counters = {
        "frames_received": written,
        "frames_written": written,
        "bytes_written": 100 * written,
        "dropped": dropped or {},
        "messages_ignored": 1,
    }
    return {"state": state, "channels": ["threshold_1"], "counters": counters}


def test_counters_add_up_over_ranks_and_a_lost_ranks_frames_are_missing() -> None:
    statuses = [
        _status("completed", 8),
        _status("acquiring", 3),
        _status("completed", 7, {"corrupt": 1}),
    ]
    fan = {"dropped": [0, 2, 0]}
    c = merge_counters(CONFIG, statuses, fan, final=True, per_rank=[8, 3, 7])
    assert c.frames_expected == 24 and c.frames_written == 18 and c.gaps == 6
    assert c.dropped == {"corrupt": 1, "rank_lost": 2} and c.frames_dropped == 3
    assert c.frames_missing == 3  # gaps no drop explains
    assert c.frames_written + c.frames_dropped + c.frames_missing == c.frames_expected
    assert c.messages_ignored == 1  # seen by every rank, counted once
    assert c.bytes_written == 1800


def test_end_state_is_the_weakest_and_a_lost_rank_fails_it() -> None:
    done, gaps = _status("completed", 8), _status("completed_with_gaps", 7)
    assert merge_state([done, done], {}, False, None) is AcquisitionState.COMPLETED
    assert merge_state([done, gaps], {}, False, None) is AcquisitionState.COMPLETED_WITH_GAPS
    assert merge_state([done, _status("aborted", 1)], {}, False, None) is AcquisitionState.ABORTED
    assert merge_state([done, done], {}, True, None) is AcquisitionState.ABORTED
    lost = {1: "its process ended (killed by SIGKILL)"}
    assert (
        merge_state([done, _status("acquiring", 3)], lost, False, None) is AcquisitionState.FAILED
    )
    assert merge_state([done, _status("failed", 3)], {}, False, None) is AcquisitionState.FAILED


def test_rank_index_comes_from_the_pod_name() -> None:
    assert rank_index_from_host("stemdaq-rank-3") == 3
    assert rank_index_from_host("stemdaq-rank-12") == 12
    assert rank_index_from_host("laptop") is None
    assert rank_index_from_host("-3") is None
