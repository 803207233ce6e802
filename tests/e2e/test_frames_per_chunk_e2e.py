"""K frames per chunk through the whole stack: simulator -> loopback ZeroMQ -> engine -> file,
with the stream faults that make chunks incomplete (drops, reorders, duplicates, corruption)."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle filter
import numpy as np
import pytest
from stemdaq.models import AcquisitionState

from .test_sim_to_file import DATA, read_frames, record

SCAN = (3, 10)  # rows of 10: with K = 4 every row ends in a partial chunk
N = SCAN[0] * SCAN[1]


@pytest.mark.parametrize(
    ("faults", "missing"),
    [
        (None, set()),
        ("drop=3,17", {3, 17}),
        ("reorder=5,14", set()),
        ("duplicate=8", set()),
        ("corrupt=21", {21}),
    ],
)
def test_k_frames_per_chunk_with_faults(make_sim, tmp_path: Path, faults, missing) -> None:
    sim = make_sim(frame_shape=(192, 192), **({"faults": faults} if faults else {}))
    acq = record(sim, tmp_path, scan=SCAN, frames_per_chunk=4)
    info = acq.info()
    assert info.chunk_shape == [1, 4, 192, 192]
    assert info.frames_written == N - len(missing)
    expected_state = AcquisitionState.COMPLETED_WITH_GAPS if missing else AcquisitionState.COMPLETED
    assert info.state is expected_state
    path = Path(info.file_path)
    with h5py.File(path) as f:
        assert f[DATA].chunks == (1, 4, 192, 192)
    data, written = read_frames(path)
    flat = written.reshape(-1)
    for i in range(N):
        m, k = divmod(i, SCAN[1])
        if i in missing:
            assert not flat[i] and not data[m, k].any(), f"gap {i}"
        else:
            assert flat[i], f"frame {i} not claimed"
            np.testing.assert_array_equal(data[m, k], sim.generator.frame(i))
