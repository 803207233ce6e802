"""SeriesTracker: placement on the scan grid and drop accounting."""

from __future__ import annotations

import pytest
from stemdaq.models import Codec, Counters, DropReason, Frame, Rejected, SeriesEnd, SeriesStart
from stemdaq.receiver import Placement, SeriesOpened, SeriesTracker

SHAPE = (4, 4)


def start(series=1, channels=(), shape=SHAPE, dtype="uint16", n=None):
    return SeriesStart(
        series_id=series,
        protocol="stream2",
        n_images=n,
        frame_shape=shape,
        dtype=dtype,
        channels=tuple(channels),
    )


def frame(fid, series=1, channel="threshold_1", shape=SHAPE, dtype="uint16"):
    return Frame(series, fid, channel, shape, dtype, Codec.RAW, b"\0" * 32)


def dropped(tracker, reason):
    return tracker.counters()["dropped"].get(reason.value, 0)


def test_row_major_placement_and_counters():
    t = SeriesTracker((2, 3))
    assert t.accept(start()) == SeriesOpened(1, None)
    assert [t.accept(frame(i)) for i in range(6)] == [Placement(i, 0) for i in range(6)]
    assert t.channels == ("threshold_1",) and t.frame_shape == SHAPE and t.dtype == "uint16"
    assert t.accept(SeriesEnd(1)) is True and not t.is_open
    c = t.counters()
    assert c["frames_received"] == 6 and c["frames_dropped"] == 0 and c["bytes_received"] == 6 * 32
    assert c["frames_expected"] == 6 and t.missing() == 0
    Counters(**c)  # field names are the model's


def test_serpentine_reverses_odd_rows():
    t = SeriesTracker((3, 4), serpentine=True)
    t.accept(start())
    positions = [t.place(frame(i)).position for i in range(12)]
    assert positions == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11]
    assert t.placed_mask().all()


def test_duplicates_are_counted_not_placed():
    t = SeriesTracker((2, 2))
    t.accept(start())
    assert t.place(frame(1)) == Placement(1, 0)
    assert t.place(frame(1)) is None
    assert t.duplicates == 1 and dropped(t, DropReason.DUPLICATE) == 1
    assert t.missing() == 3


def test_out_of_range_and_negative_ids():
    t = SeriesTracker((2, 2))
    t.accept(start())
    assert t.place(frame(4)) is None and t.place(frame(-1)) is None
    assert dropped(t, DropReason.OUT_OF_RANGE) == 2


def test_wrong_series_is_ignored_and_does_not_disturb():
    t = SeriesTracker((2, 2))
    t.accept(start(series=5))
    assert t.place(frame(0, series=4)) is None
    assert t.accept(SeriesEnd(4)) is False  # another series' end does not close ours
    assert t.is_open and t.place(frame(0, series=5)) == Placement(0, 0)
    assert dropped(t, DropReason.WRONG_SERIES) == 1 and t.counters()["messages_ignored"] == 1


def test_strays_after_abort_do_not_reach_the_next_series():
    t = SeriesTracker((2, 2))
    t.accept(start(series=1))
    t.place(frame(0, series=1))
    assert t.abort() == 1 and t.abort() is None
    assert t.place(frame(1, series=1)) is None  # stray after abort, no series open
    assert dropped(t, DropReason.NO_SERIES) == 1
    assert t.accept(start(series=2)) == SeriesOpened(2, None)
    assert t.place(frame(1, series=1)) is None  # stray of the old series
    assert t.accept(SeriesEnd(1)) is False
    assert t.place(frame(0, series=2)) == Placement(0, 0)  # fresh bookkeeping
    assert dropped(t, DropReason.WRONG_SERIES) == 1 and t.missing() == 3


def test_frames_before_any_start_are_no_series():
    t = SeriesTracker((2, 2))
    assert t.accept(frame(0)) is None and dropped(t, DropReason.NO_SERIES) == 1
    assert t.accept(SeriesEnd(1)) is False and t.counters()["messages_ignored"] == 1


def test_new_start_mid_series_reports_interrupted():
    t = SeriesTracker((2, 2))
    t.accept(start(series=1))
    t.place(frame(0, series=1))
    assert t.accept(start(series=1)) is None  # repeated start of the same series: ignored
    opened = t.accept(start(series=2))
    assert opened == SeriesOpened(2, interrupted=1) and t.interrupted == [1]
    assert t.place(frame(0, series=2)) == Placement(0, 0)
    assert t.place(frame(1, series=1)) is None and dropped(t, DropReason.WRONG_SERIES) == 1


def test_new_start_mid_series_ignored_when_configured():
    t = SeriesTracker((2, 2), on_new_start="ignore")
    t.accept(start(series=1))
    assert t.accept(start(series=2)) is None and t.series_id == 1
    assert t.place(frame(0, series=2)) is None and dropped(t, DropReason.WRONG_SERIES) == 1
    assert t.counters()["messages_ignored"] == 1


def test_wrong_shape_or_dtype_against_start():
    t = SeriesTracker((2, 2))
    t.accept(start(shape=(4, 4), dtype="uint16"))
    assert t.place(frame(0, shape=(4, 5))) is None
    assert t.place(frame(1, dtype="uint32")) is None
    assert t.place(frame(2)) == Placement(2, 0)
    assert dropped(t, DropReason.WRONG_SHAPE) == 2


def test_wrong_shape_against_first_frame_when_start_is_silent():
    t = SeriesTracker((2, 2))
    t.accept(start(shape=None, dtype=None))
    assert t.place(frame(0, shape=(8, 8), dtype="uint8")) == Placement(0, 0)
    assert t.place(frame(1, shape=(8, 8), dtype="uint16")) is None
    assert t.place(frame(2, shape=(4, 8), dtype="uint8")) is None
    assert t.frame_shape == (8, 8) and t.dtype == "uint8"


def test_partial_start_info_is_completed_by_first_frame():
    t = SeriesTracker((2, 2))
    t.accept(start(shape=(8, 8), dtype=None))  # v1: shape from config, dtype from the frames
    assert t.place(frame(0, shape=(8, 8), dtype="uint32")) == Placement(0, 0)
    assert t.place(frame(1, shape=(8, 8), dtype="uint16")) is None


def test_channels_from_start_in_announced_order():
    t = SeriesTracker((2, 2))
    t.accept(start(channels=("threshold_2", "threshold_1")))
    assert t.place(frame(0, channel="threshold_1")) == Placement(0, 1)
    assert t.place(frame(0, channel="threshold_2")) == Placement(0, 0)
    assert t.place(frame(0, channel="threshold_3")) is None
    assert dropped(t, DropReason.UNKNOWN_CHANNEL) == 1
    assert t.counters()["frames_expected"] == 8 and t.missing() == 6


def test_channels_first_seen_order_when_not_announced():
    t = SeriesTracker((2, 2))
    t.accept(start())
    assert t.place(frame(0, channel="b")) == Placement(0, 0)
    assert t.place(frame(0, channel="a")) == Placement(0, 1)
    assert t.place(frame(0, channel="a")) is None  # duplicate is per channel
    assert t.channels == ("b", "a")


def test_configured_channel_ignores_the_others():
    t = SeriesTracker((2, 2), channel="threshold_2")
    t.accept(start(channels=("threshold_1", "threshold_2")))
    assert t.channels == ("threshold_2",)
    assert t.place(frame(0, channel="threshold_1")) is None
    assert t.place(frame(0, channel="threshold_2")) == Placement(0, 0)
    # not recorded by choice: ignored, not counted as lost
    assert dropped(t, DropReason.UNKNOWN_CHANNEL) == 0
    assert t.counters()["messages_ignored"] == 1 and t.counters()["frames_dropped"] == 0


def test_rejected_events_are_counted():
    t = SeriesTracker((2, 2))
    t.accept(start(series=1))
    t.accept(Rejected(DropReason.CORRUPT, "x", 1, 3))
    t.accept(Rejected(DropReason.MALFORMED, "y"))
    c = t.counters()
    assert c["dropped"] == {"corrupt": 1, "malformed": 1} and c["frames_received"] == 1
    assert c["frames_dropped"] == 2


def test_rejected_strays_count_as_strays_not_as_damage():
    t = SeriesTracker((2, 2))
    t.accept(Rejected(DropReason.CORRUPT, "before any start", 7, 0))
    t.accept(start(series=1))
    t.accept(Rejected(DropReason.CORRUPT, "old series", 7, 1))
    t.accept(Rejected(DropReason.CORRUPT, "this series", 1, 2))
    assert t.counters()["dropped"] == {"no_series": 1, "wrong_series": 1, "corrupt": 1}


def test_invalid_arguments():
    with pytest.raises(ValueError):
        SeriesTracker((0, 3))
    with pytest.raises(ValueError):
        SeriesTracker((2, 2), on_new_start="panic")  # type: ignore[arg-type]
