"""SeriesTracker.place against a plain re-statement of the placement rules (any event order)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from stemdaq.models import Codec, Frame, SeriesEnd, SeriesStart
from stemdaq.receiver import Placement, SeriesTracker

SCAN = (3, 4)
N = SCAN[0] * SCAN[1]


class Reference:
    """The rules of the placement module docstring, one check after the other."""

    def __init__(self, serpentine: bool, channel: str | None) -> None:
        self.serpentine, self.channel = serpentine, channel
        self.open, self.series = False, None
        self.dropped: dict[str, int] = {}
        self.received = self.bytes = self.ignored = 0
        self.reset(None)

    def reset(self, start: SeriesStart | None) -> None:
        self.shape = start.frame_shape if start else None
        self.dtype = start.dtype if start else None
        names = (self.channel,) if self.channel else (start.channels if start else ())
        self.announced = bool(names)
        self.channels = list(names)
        self.seen: list[set[int]] = [set() for _ in names]

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def place(self, f: Frame) -> Placement | None:
        self.received += 1
        self.bytes += len(f.payload)
        if not self.open:
            return self.drop("no_series")
        if f.series_id != self.series:
            return self.drop("wrong_series")
        if f.channel not in self.channels:
            if self.channel is not None:
                self.ignored += 1
                return None
            if self.announced:
                return self.drop("unknown_channel")
            self.channels.append(f.channel)
            self.seen.append(set())
        ci = self.channels.index(f.channel)
        if not 0 <= f.frame_id < N:
            return self.drop("out_of_range")
        if self.shape is None and self.dtype is None:
            self.shape, self.dtype = f.shape, f.dtype
        elif self.shape is None and f.dtype == self.dtype:
            self.shape = f.shape
        elif self.dtype is None and f.shape == self.shape:
            self.dtype = f.dtype
        if (f.shape, f.dtype) != (self.shape, self.dtype):
            return self.drop("wrong_shape")
        row, col = divmod(f.frame_id, SCAN[1])
        position = row * SCAN[1] + (SCAN[1] - 1 - col if self.serpentine and row % 2 else col)
        if position in self.seen[ci]:
            return self.drop("duplicate")
        self.seen[ci].add(position)
        return Placement(position, ci)


_frames = st.builds(
    Frame,
    series_id=st.integers(1, 3),
    frame_id=st.integers(-2, N + 1),
    channel=st.sampled_from(["a", "b", "c"]),
    shape=st.sampled_from([(4, 4), (4, 5)]),
    dtype=st.sampled_from(["uint16", "uint8"]),
    codec=st.just(Codec.RAW),
    payload=st.binary(max_size=4),
)
_starts = st.builds(
    SeriesStart,
    series_id=st.integers(1, 3),
    protocol=st.just("stream2"),
    frame_shape=st.sampled_from([None, (4, 4)]),
    dtype=st.sampled_from([None, "uint16"]),
    channels=st.sampled_from([(), ("a",), ("b", "a")]),
)
_events = st.lists(
    st.one_of(_frames, _frames, _frames, _starts, st.builds(SeriesEnd, st.integers(1, 3))),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(_events, st.booleans(), st.sampled_from([None, "a"]))
def test_place_follows_the_rules(events, serpentine, channel):
    tracker = SeriesTracker(SCAN, serpentine=serpentine, channel=channel)
    ref = Reference(serpentine, channel)
    for event in events:
        if isinstance(event, Frame):
            assert tracker.place(event) == ref.place(event)
        elif isinstance(event, SeriesStart):
            if tracker.open(event) is not None:
                ref.open, ref.series = True, event.series_id
                ref.reset(event)
        elif tracker.end(event):
            ref.open = False
    c = tracker.counters()
    assert c["dropped"] == ref.dropped and c["frames_received"] == ref.received
    assert c["bytes_received"] == ref.bytes
    assert tracker.channels == tuple(ref.channels)
    assert tracker.missing() == max(1, len(ref.channels)) * N - sum(map(len, ref.seen))
