"""One test per stream fault: the file and the counters show exactly what happened.

The simulator logs every fault it injected; each test derives its expectation from the fault
spec and checks that nothing else was lost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemdaq.models import AcquisitionState

from .test_sim_to_file import SCAN, expected_frame, read_frames, record

N = SCAN[0] * SCAN[1]


def check_file(sim, acq, missing: set[int]) -> None:
    """Every frame not in ``missing`` is in the file, bit for bit; the missing ones are gaps."""
    data, written = read_frames(Path(acq.info().file_path))
    flat_written = written.reshape(-1)
    for i in range(N):
        if i in missing:
            assert not flat_written[i], f"frame {i} should be a gap"
            assert not data.reshape(N, *data.shape[2:])[i].any(), f"gap {i} should hold the fill value"
        else:
            assert flat_written[i], f"frame {i} missing"
            np.testing.assert_array_equal(data[i // SCAN[1], i % SCAN[1]], expected_frame(sim, i))


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_dropped_frames_are_gaps(make_sim, tmp_path, fmt):
    sim = make_sim(fmt=fmt, faults="drop=3,7")
    acq = record(sim, tmp_path)
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED
    assert info.frames_written == N - 2
    assert info.counters.frames_missing == 2
    assert info.frames_dropped == 0  # never received: missing, not dropped
    check_file(sim, acq, {3, 7})


def test_duplicates_counted_and_written_once(make_sim, tmp_path):
    sim = make_sim(faults="duplicate=5,6")
    acq = record(sim, tmp_path)
    c = acq.info().counters
    assert c.dropped.get("duplicate") == 2
    assert c.frames_written == N and c.frames_received == N + 2
    check_file(sim, acq, set())


def test_reordered_frames_land_at_their_position(make_sim, tmp_path):
    sim = make_sim(faults="reorder=2,10")
    acq = record(sim, tmp_path)
    assert acq.info().frames_written == N
    check_file(sim, acq, set())


@pytest.mark.parametrize("fmt", ["cbor", "json"])
@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_corrupt_payload_dropped_with_reason(make_sim, tmp_path, fmt, fault):
    sim = make_sim(fmt=fmt, faults=f"{fault}=4")
    acq = record(sim, tmp_path)
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED
    assert info.frames_written == N - 1
    assert info.frames_dropped == 1
    assert set(k for k, v in info.counters.dropped.items() if v) <= {"corrupt", "wrong_shape"}
    check_file(sim, acq, {4})


def test_wrong_series_ignored(make_sim, tmp_path):
    sim = make_sim(faults="wrong_series=6")
    acq = record(sim, tmp_path)
    c = acq.info().counters
    assert c.dropped.get("wrong_series") == 1
    assert c.frames_written == N - 1
    check_file(sim, acq, {6})


def test_malformed_message_counted(make_sim, tmp_path):
    sim = make_sim(faults="malformed=9")
    acq = record(sim, tmp_path)
    c = acq.info().counters
    assert c.dropped.get("malformed") == 1
    assert c.frames_written == N - 1
    check_file(sim, acq, {9})


def test_missing_end_closes_after_timeout(make_sim, tmp_path):
    sim = make_sim(faults="no_end")
    acq = record(sim, tmp_path, end_timeout=1.0)
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED
    assert info.frames_written == N
    assert any("end" in w for w in info.warnings)
    check_file(sim, acq, set())


def test_abort_mid_series_then_next_series_is_clean(make_sim, tmp_path):
    sim = make_sim(faults="abort_after=8")
    acq = record(sim, tmp_path, end_timeout=1.0)
    info = acq.info()
    assert info.frames_written == 8
    assert info.counters.frames_missing == N - 8
    check_file(sim, acq, set(range(8, N)))
