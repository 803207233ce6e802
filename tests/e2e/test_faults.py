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
            assert not data.reshape(N, *data.shape[2:])[i].any(), (
                f"gap {i} should hold the fill value"
            )
        else:
            assert flat_written[i], f"frame {i} missing"
            np.testing.assert_array_equal(data[i // SCAN[1], i % SCAN[1]], expected_frame(sim, i))


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_dropped_frames_are_gaps(make_sim, tmp_path, fmt):
    sim = make_sim(fmt=fmt, faults="drop=3,7")
    acq = record(sim, tmp_path)
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED_WITH_GAPS  # completed = every position
    assert any("2 of" in w and "missing" in w for w in info.warnings)
    assert info.frames_written == N - 2
    assert info.counters.frames_missing == 2
    assert info.frames_dropped == 0  # never received: missing, not dropped
    check_file(sim, acq, {3, 7})


def test_duplicates_counted_and_written_once(make_sim, tmp_path):
    sim = make_sim(faults="duplicate=5,6")
    acq = record(sim, tmp_path)
    assert acq.info().state is AcquisitionState.COMPLETED
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
@pytest.mark.parametrize("compression", ["bslz4", "lz4"])
@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_corrupt_payload_dropped_with_reason(make_sim, tmp_path, fmt, compression, fault):
    sim = make_sim(fmt=fmt, compression=compression, faults=f"{fault}=4")
    acq = record(sim, tmp_path)
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED_WITH_GAPS
    assert info.frames_written == N - 1
    assert info.frames_dropped == 1
    assert {k for k, v in info.counters.dropped.items() if v} <= {"corrupt", "wrong_shape"}
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
    # every frame is there, but nobody said the series was over: not "completed"
    assert info.state is AcquisitionState.COMPLETED_WITH_GAPS
    assert info.frames_written == N
    assert any("no end-of-series" in w for w in info.warnings)
    check_file(sim, acq, set())


def test_abort_mid_series_then_next_series_is_clean(make_sim, tmp_path):
    sim = make_sim(faults="abort_after=8")
    acq = record(sim, tmp_path, end_timeout=1.0)
    info = acq.info()
    assert info.frames_written == 8
    assert info.counters.frames_missing == N - 8 == info.counters.gaps
    check_file(sim, acq, set(range(8, N)))


def test_abort_in_active_mode_leaves_the_detector_idle(make_sim, tmp_path):
    import time

    from stemdaq.acquisition import Acquisition
    from stemdaq.config import AcquisitionConfig

    sim = make_sim(frame_time=0.005)  # paced: 400 frames take 2 s
    cfg = AcquisitionConfig(
        stream_endpoint=sim.stream_endpoint,
        detector_url=sim.rest_url,
        scan_shape=(20, 20),
        start_timeout=20,
        end_timeout=3,
    )
    acq = Acquisition(cfg, tmp_path / "aborted.nxs", acq_id="a")
    acq.start()
    deadline = time.monotonic() + 20
    while acq.info().frames_written < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    acq.abort()
    assert acq.close(timeout=20)
    info = acq.info()
    assert info.state is AcquisitionState.ABORTED
    assert 0 < info.frames_written < 400 and info.counters.gaps == 400 - info.frames_written
    deadline = time.monotonic() + 10
    while sim.state != "idle" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (
        sim.state == "idle"
    )  # the detector was told to abort: nobody left streaming into the void
    check_written = read_frames(Path(info.file_path))[1].reshape(-1)
    assert check_written.sum() == info.frames_written


def test_bad_detector_url_is_a_clear_error_not_a_crash(tmp_path):
    from stemdaq.acquisition import Acquisition
    from stemdaq.config import AcquisitionConfig
    from stemdaq.errors import StemdaqError

    cfg = AcquisitionConfig(
        stream_endpoint="tcp://127.0.0.1:1",
        detector_url="http://[::1",
        scan_shape=(2, 2),
        start_timeout=5,
    )
    acq = Acquisition(cfg, tmp_path / "x.nxs", acq_id="x")
    with pytest.raises(StemdaqError, match="detector"):
        acq.start()
    assert acq.close(timeout=10)
    info = acq.info()
    assert info.state is AcquisitionState.FAILED and "detector" in (info.error or "")
    assert not (tmp_path / "x.nxs").exists()
