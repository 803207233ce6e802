"""The completion of the live view from the file keeps to its time budget (per batch, not per
scan row: a row of large frames can take longer than the whole budget)."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
from stemdaq.writer.live_groups import complete_from_file

N_M, N_K, NY, NX = 4, 64, 8, 8


class SlowLive:
    """Stands in for the summary accumulator: every batch it is given costs ``cost`` seconds."""

    channel = None
    scan_shape = (N_M, N_K)
    batch_n = 4

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.given: list[int] = []

    def missing(self) -> np.ndarray:
        return np.arange(N_M * N_K)

    def complete(self, positions: np.ndarray, frames: np.ndarray) -> None:
        assert frames.shape == (positions.size, NY, NX)
        time.sleep(self.cost)
        self.given.extend(int(p) for p in positions)


def _event(path: Path) -> h5py.File:
    f = h5py.File(path, "w")
    image = f.create_group("event/image1")
    data = np.arange(N_M * N_K * NY * NX, dtype=np.uint16).reshape(N_M, N_K, NY, NX)
    image.create_dataset("image_4d/intensity", data=data)
    image.create_dataset("frames/written", data=np.ones((N_M, N_K), np.uint8))
    return f


def test_budget_is_kept_within_one_batch(tmp_path: Path) -> None:
    live = SlowLive(cost=0.02)  # a row is 16 batches: 0.32 s
    with _event(tmp_path / "f.h5") as f:
        added, seconds = complete_from_file(f["event"], live, 0.05)  # type: ignore[arg-type]
    assert 0 < added < N_K  # stopped inside the first row
    assert added == len(live.given)
    assert seconds < 0.05 + 2 * live.cost + 0.05  # one batch past the budget at most (+ slack)


def test_everything_when_the_budget_allows(tmp_path: Path) -> None:
    live = SlowLive(cost=0.0)
    with _event(tmp_path / "f.h5") as f:
        added, _ = complete_from_file(f["event"], live, 10.0)  # type: ignore[arg-type]
    assert added == N_M * N_K
    assert sorted(live.given) == list(range(N_M * N_K))
