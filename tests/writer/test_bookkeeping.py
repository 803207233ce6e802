"""Bookkeeping marks (array.array buffers under numpy views) and the rows a flush writes."""

from __future__ import annotations

import h5py
import numpy as np
from stemdaq.models import Codec, Frame
from stemdaq.writer.bookkeeping import Bookkeeping


def frame(fid: int, t: float | None = 1.5) -> Frame:
    return Frame(
        7, fid, "c", (4, 4), "uint16", Codec.BSLZ4, b"", t, None if t is None else t + 1, t
    )


def test_mark_run_sets_views_counts_and_skips_gaps():
    book = Bookkeeping(2, (3, 4))
    book.mark_run(1, 4, [frame(10), None, frame(12, None), None])
    assert book.written[1].tolist() == [0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    assert not book.written[0].any()
    assert book.frame_id[1, 4] == 10 and book.frame_id[1, 6] == 12 and book.frame_id[1, 5] == -1
    assert book.t_start[1, 4] == 1.5 and book.t_stop[1, 4] == 2.5 and book.t_real[1, 4] == 1.5
    assert np.isnan(book.t_start[1, 6])  # no time given: stays NaN
    assert book.counts == [0, 2] and book.count == 2 and book.since_store == 2


def test_marking_again_replaces_values_without_counting_twice():
    book = Bookkeeping(1, (2, 2))
    book.mark(0, 3, frame(5, 1.0))
    book.mark(0, 3, frame(6, 2.0))  # a rewritten chunk marks its stored frames again
    assert book.count == 1 and book.counts == [1]
    assert book.frame_id[0, 3] == 6 and book.t_start[0, 3] == 2.0


def test_store_writes_only_changed_rows_and_a_trailing_gap_stays_in_range(tmp_path):
    book = Bookkeeping(1, (3, 4))
    with h5py.File(tmp_path / "b.h5", "w") as f:
        book.create(f.create_group("image1"), "c")
        # the edge chunk of the last row: K = 8 slots, only the row's 4 positions exist
        book.mark_run(0, 8, [frame(8), frame(9), frame(10), frame(11)] + [None] * 4)
        book.store()
        coll = f["image1/frames"]
        assert coll["written"][()].tolist() == [[0] * 4, [0] * 4, [1] * 4]
        assert coll["frame_id"][2].tolist() == [8, 9, 10, 11]
        assert coll["frames_written"][()] == 4
        book.mark(0, 1, frame(1))
        book.store()
        assert coll["written"][0].tolist() == [0, 1, 0, 0]
        assert coll["frames_written"][()] == 5
        assert book.since_store == 0


def test_a_run_of_gaps_marks_nothing():
    book = Bookkeeping(1, (2, 2))
    book.mark_run(0, 0, [None, None])
    assert book.count == 0 and book.since_store == 0 and not book.written.any()
