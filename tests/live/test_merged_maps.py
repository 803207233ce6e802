"""Rows of a rank's maps (``LiveMaps.raw_rows_since``) put into the service's merged maps
(``LiveMaps.put_rows``): what travels, and that the merged images equal one process' maps."""

from __future__ import annotations

import numpy as np
from stemdaq.control.live import MergedMaps
from stemdaq.live.geometry import Detectors
from stemdaq.live.maps import LiveMaps

SCAN, FRAME = (6, 4), (16, 16)
DET = Detectors((7.5, 7.5), 3.0, 4.0, 7.0)


def test_two_ranks_rows_merge_into_one_process_maps() -> None:
    rng = np.random.default_rng(3)
    frames = rng.poisson(5.0, (SCAN[0] * SCAN[1], *FRAME)).astype(np.float32)
    one = LiveMaps(SCAN, FRAME, DET)
    one.add(np.arange(frames.shape[0]), frames)
    ranks = [LiveMaps(SCAN, FRAME, DET) for _ in range(2)]
    rows_of = [np.array([0, 1, 4, 5]), np.array([2, 3])]  # blocks of 2 rows, rank 0 and 1
    for maps, rows in zip(ranks, rows_of, strict=True):
        pos = (rows[:, None] * SCAN[1] + np.arange(SCAN[1])).ravel()
        maps.add(pos, frames[pos])
    merged = MergedMaps(SCAN, FRAME, DET)
    versions = [-1, -1]
    for i, maps in enumerate(ranks):
        now, rows, raw, filled = maps.raw_rows_since(versions[i])
        assert sorted(rows.tolist()) == sorted(rows_of[i].tolist()), "only rows it filled travel"
        assert raw.shape == (rows.size, SCAN[1], 5) and filled.all()
        merged.put_rows(rows, raw, filled)
        versions[i] = now
    for name, image in one.images().items():
        np.testing.assert_array_equal(merged.images()[name], image, err_msg=name)
    assert merged.filled().all() and merged.filled_count == SCAN[0] * SCAN[1]
    assert ranks[0].raw_rows_since(versions[0])[1].size == 0, "nothing changed: nothing travels"

    v = merged.version
    ranks[1].set_detectors(Detectors((7.5, 7.5), 3.0, 5.0, 7.0))  # every filled row again
    _, rows, raw, filled = ranks[1].raw_rows_since(versions[1])
    merged.put_rows(rows, raw, filled)
    changed = merged.rows_since(v)[1]
    assert sorted(changed.tolist()) == [2, 3], "the WebSocket sends only the rows that changed"


def test_put_rows_takes_only_filled_positions() -> None:
    merged = MergedMaps(SCAN, FRAME, DET)
    raw = np.ones((1, SCAN[1], 5), dtype=np.float32)
    filled = np.array([[True, False, True, False]])
    merged.put_rows(np.array([2]), raw, filled)
    assert merged.filled()[2].tolist() == [True, False, True, False]
    assert merged.filled_count == 2 and np.isnan(merged.images()["bf"][2, 1])
