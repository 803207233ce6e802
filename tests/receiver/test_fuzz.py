"""Hypothesis fuzzing of StreamDecoder: it never raises, and bad messages become Rejected."""

from __future__ import annotations

import cbor2
import numpy as np
from cbor2 import CBORTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stemdaq.models import Codec, Frame, Rejected, SeriesEnd, SeriesStart
from stemdaq.receiver import SeriesTracker, StreamDecoder
from stemdaq.receiver.metadata import DTYPE_SIZES

EVENT_TYPES = (Frame, SeriesStart, SeriesEnd, Rejected)
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(events, tracker: SeriesTracker) -> None:
    assert isinstance(events, list)
    for ev in events:
        assert isinstance(ev, EVENT_TYPES)
        if isinstance(ev, Frame):
            ny, nx = ev.shape
            assert ny > 0 and nx > 0 and ev.dtype in DTYPE_SIZES
            if ev.codec is Codec.RAW:
                assert len(ev.payload) == ny * nx * DTYPE_SIZES[ev.dtype]
        tracker.accept(ev)
    tracker.counters()


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_are_rejected(parts):
    tracker = SeriesTracker((4, 4))
    events = StreamDecoder().decode(parts)
    _check(events, tracker)
    assert events and all(isinstance(e, Rejected) for e in events)
    assert tracker.counters()["frames_dropped"] == len(events)


_keys = st.sampled_from(
    [
        "type",
        "series_id",
        "image_id",
        "data",
        "threshold_1",
        "image_size_x",
        "image_size_y",
        "image_dtype",
        "channels",
        "number_of_images",
        "real_time",
    ]
)
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.text(max_size=10),
    st.binary(max_size=40),
    st.sampled_from(["start", "image", "end", "bslz4", "lz4", "uint16"]),
)


def _tagged(children):
    return st.builds(
        CBORTag, st.sampled_from([0, 1, 40, 64, 69, 70, 85, 1040, 56500, 55799, 99]), children
    )


_cbor = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(_keys, st.text(max_size=5)), children, max_size=6),
        _tagged(children),
    ),
    max_leaves=30,
)


@FUZZ
@given(_cbor, st.booleans())
def test_random_cbor_structures_never_raise(value, magic):
    try:
        data = cbor2.dumps(value)
    except Exception:
        return
    dec = StreamDecoder()
    events = dec.decode([(b"\xd9\xd9\xf7" if magic else b"") + data])
    _check(events, SeriesTracker((4, 4)))
    if not isinstance(value, dict):
        assert len(events) == 1 and isinstance(events[0], Rejected)


@FUZZ
@given(st.dictionaries(_keys, _cbor, max_size=8), st.sampled_from(["start", "image", "end"]))
def test_random_typed_messages_never_raise(msg, kind):
    msg = {"type": kind, **msg}
    try:
        data = cbor2.dumps(msg)
    except Exception:
        return
    _check(StreamDecoder().decode([data]), SeriesTracker((4, 4)))


def _valid_messages(wire):
    arr = wire.frame_array((24, 24), "uint16")
    v2 = [
        wire.v2(wire.v2_start(shape=(24, 24))),
        wire.v2(wire.v2_image(0, arr)),
        wire.v2(wire.v2_image(1, arr, codec="raw")),
        wire.v2(wire.v2_image(2, arr, codec="lz4")),
    ]
    v1 = [
        wire.v1_header(detail="all"),
        wire.v1_image(0, arr),
        wire.v1_image(1, arr, encoding="lz4<"),
        wire.v1_image(2, arr, encoding="<"),
    ]
    return v2, v1


@FUZZ
@given(st.data())
def test_truncated_messages_are_rejected(wire, data):
    v2, v1 = _valid_messages(wire)
    msg = data.draw(st.sampled_from(v2[1:]))
    cut = data.draw(st.integers(0, len(msg) - 1))
    events = StreamDecoder().decode([msg[:cut]])
    _check(events, SeriesTracker((4, 4)))
    assert len(events) == 1 and isinstance(events[0], Rejected)
    parts = list(data.draw(st.sampled_from(v1[1:])))
    cut = data.draw(st.integers(0, len(parts[2]) - 1))
    parts[2] = parts[2][:cut]
    events = StreamDecoder().decode(parts)
    assert len(events) == 1 and isinstance(events[0], Rejected)


@FUZZ
@given(st.data())
def test_mutated_messages_never_raise(wire, data):
    v2, v1 = _valid_messages(wire)
    tracker = SeriesTracker((4, 4))
    dec = StreamDecoder()
    for _ in range(3):
        if data.draw(st.booleans()):
            parts = [bytearray(data.draw(st.sampled_from(v2)))]
        else:
            parts = [bytearray(p) for p in data.draw(st.sampled_from(v1))]
        for _ in range(data.draw(st.integers(1, 4))):
            part = parts[data.draw(st.integers(0, len(parts) - 1))]
            if part:
                pos = data.draw(st.integers(0, len(part) - 1))
                part[pos] = data.draw(st.integers(0, 255))
        _check(dec.decode([bytes(p) for p in parts]), tracker)


@FUZZ
@given(st.data())
def test_random_multipart_mixes_never_raise(wire, data):
    v2, v1 = _valid_messages(wire)
    pool = (
        [p for msg in v1 for p in msg] + v2 + [b"", b"{}", b'{"htype": "dheader-1.0", "series": 1}']
    )
    dec = StreamDecoder()
    tracker = SeriesTracker((4, 4))
    for _ in range(data.draw(st.integers(1, 6))):
        parts = data.draw(
            st.lists(st.one_of(st.sampled_from(pool), st.binary(max_size=50)), max_size=6)
        )
        _check(dec.decode(parts), tracker)


def test_decoded_frame_payload_matches_after_fuzz_inputs(wire):
    """After garbage, the decoder still decodes a good message (no sticky bad state)."""
    dec = StreamDecoder()
    dec.decode([b'{"htype": "dheader-1.0", "series": 1, "header_detail": "basic"}'])  # split header
    dec.decode([b"\x00garbage"])
    arr = wire.frame_array((24, 24))
    events = dec.decode(wire.v1_image(0, arr, series=1))
    assert [type(e) for e in events] == [SeriesStart, Frame]
    np.testing.assert_array_equal(wire.unbslz4(events[1].payload, (24, 24), "uint16"), arr)
