"""The fast paths (receiver.fast1 / fast2) against the full decoders, which are the reference.

Whatever the fast path accepts must decode to equal events (payloads compared by content), and
whatever the full decoder rejects the fast path must leave to it: every test here decodes the
same messages with ``StreamDecoder()`` and ``StreamDecoder(fast=False)`` and compares.
"""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
import stemdaq.receiver.decoder as decoder_module
import zmq
from cbor2 import CBORTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stemdaq.models import Codec, Frame, Rejected
from stemdaq.receiver import StreamDecoder
from stemdaq.receiver.stream1 import Stream1Decoder
from stemdaq.sim.encode import SeriesEncoder, SeriesInfo
from stemdaq.sim.frames import FrameGenerator
from stemdaq.sim.replay import default_config, encode_series

FAULTS = "corrupt=2;truncate=3;malformed=4;wrong_series=5;duplicate=6;drop=7"
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def compare(messages, walk_blocks=True):
    """Decode with the fast decoder (``decode`` and ``decode_part``) and the full one."""
    fast = StreamDecoder(walk_blocks)
    part = StreamDecoder(walk_blocks)
    full = StreamDecoder(walk_blocks, fast=False)
    out = []
    for msg in messages:
        expected = full.decode(msg)
        assert fast.decode(msg) == expected
        if len(msg) == 1:
            assert part.decode_part(msg[0]) == expected
        out.append(expected)
    assert fast.quirks == full.quirks
    return out


def appendix_series(n, fmt="cbor", channels=("threshold_1",)):
    """A series with an image appendix (v2: user_data after data; v1: a fifth part)."""
    config = default_config((16, 12), "uint16", "bslz4")
    config.update(nimages=n, ntrigger=1, trigger_mode="ints")
    info = SeriesInfo(
        series_id=4, n_images=n, config=config, fmt=fmt, channels=channels, image_appendix="app"
    )
    enc = SeriesEncoder(info, FrameGenerator((16, 12), "uint16", (1, n)))
    msgs = enc.start()
    for i in range(n):
        msgs += enc.image(i)
    return msgs + enc.end()


@pytest.mark.parametrize("fmt", ["cbor", "json"])
@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("walk_blocks", [True, False])
def test_simulator_series_with_faults(fmt, compression, dtype, walk_blocks):
    msgs = encode_series(
        10,
        fmt=fmt,
        frame_shape=(24, 20),
        dtype=dtype,
        compression=compression,
        faults=FAULTS,
        header_detail="all",
    )
    events = compare(msgs, walk_blocks)
    assert sum(isinstance(e, Frame) for ev in events for e in ev) >= 5


@pytest.mark.parametrize("channels", [("threshold_1", "threshold_2"), ("a", "b", "c")])
@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
def test_simulator_multichannel(channels, compression):
    msgs = encode_series(
        8, frame_shape=(16, 16), compression=compression, channels=channels, faults=FAULTS
    )
    compare(msgs)


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_image_appendix(fmt):
    compare(appendix_series(4, fmt))
    if fmt == "cbor":
        compare(appendix_series(4, fmt, channels=("t1", "t2")))


def test_split_header_v1():
    compare(encode_series(4, fmt="json", frame_shape=(16, 16), split_header=True))


def test_integers_growing_through_every_token_length():
    """Image ids and times cross 23/255/65535: each token length, and the switches between."""
    msgs = encode_series(300, frame_shape=(8, 8), frame_time=0.02)
    compare(msgs)
    config = default_config((8, 8), "uint8", "none", 0.02)
    config.update(nimages=3, ntrigger=1, trigger_mode="ints")
    enc = SeriesEncoder(
        SeriesInfo(series_id=1, n_images=3, config=config), FrameGenerator((8, 8), "uint8")
    )
    big = [enc.image(i)[0] for i in (65534, 65535, 65536, 2**32 - 1, 2**32, 2**32 + 1)]
    compare([*big, *big[::-1]])


def test_interleaved_series_switch_the_template():
    a = encode_series(6, frame_shape=(16, 16), series_id=1)
    b = encode_series(6, frame_shape=(32, 8), series_id=2, compression="none")
    mixed = [m for pair in zip(a[1:-1], b[1:-1], strict=True) for m in pair]
    compare([a[0], b[0], *mixed, *a[1:3], a[-1], b[-1]])


def _fail(*args, **kwargs):
    raise AssertionError("the full decoder was called")


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("cbor", "bslz4"), ("cbor", "lz4"), ("cbor", "none"), ("json", "bslz4"), ("json", "none")],
)
@pytest.mark.parametrize("as_frame", [True, False])
def test_clean_images_take_the_fast_path_zero_copy(monkeypatch, fmt, compression, as_frame):
    msgs = encode_series(40, fmt=fmt, frame_shape=(24, 20), compression=compression)
    dec = StreamDecoder()
    dec.decode(msgs[0])
    monkeypatch.setattr(decoder_module, "decode_cbor", _fail)
    monkeypatch.setattr(Stream1Decoder, "decode", _fail)
    for msg in msgs[1:-1]:
        parts = [zmq.Frame(p) for p in msg] if as_frame else msg
        events = dec.decode_part(parts[0]) if len(parts) == 1 else dec.decode(parts)
        assert len(events) == 1 and isinstance(events[0], Frame), events
        payload = events[0].payload
        assert isinstance(payload, memoryview) and payload.obj is parts[-2 if fmt == "json" else 0]


def _image(**fields):
    msg = {
        "type": "image",
        "series_id": 3,
        "series_unique_id": "u" * 40,
        "image_id": 0,
        "real_time": [9, 10],
        "series_date": CBORTag(0, "2026-01-02T03:04:05Z"),
        "start_time": [0, 10],
        "stop_time": [9, 10],
        "data": {"ch": CBORTag(40, [[2, 3], CBORTag(69, np.arange(6, dtype="<u2").tobytes())])},
    }
    msg.update(fields)
    return b"\xd9\xd9\xf7" + cbor2.dumps(msg)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"image_id": 2**40, "start_time": [2**63, 2**64 - 1], "stop_time": [5, 0]},
        {"real_time": [1, 0], "series_id": 2**33},
        {"series_unique_id": "", "series_date": CBORTag(0, "not a date")},
        {"series_unique_id": "é"},  # not ASCII: the full decoder decides
        {"image_id": -1},
        {"image_id": True},
        {"start_time": [1.5, 2]},
        {"start_time": [1, 2, 3]},
        {"user_data": None},
        {"user_data": {"x": 1}},
        {"extra": 1},
        {"data": {}},
        {"data": {"ch": CBORTag(1040, [[2, 3], CBORTag(69, bytes(12))])}},
        {"data": {"ch": CBORTag(40, [[2, 3], CBORTag(69, bytes(11))])}},
        {"data": {"ch": CBORTag(40, [[0, 3], CBORTag(69, bytes(0))])}},
        {"data": {"ch": CBORTag(40, [[2, 3], CBORTag(99, bytes(12))])}},
        {"data": {"é": CBORTag(40, [[2, 3], CBORTag(69, bytes(12))])}},
        {"data": {1: CBORTag(40, [[2, 3], CBORTag(69, bytes(12))])}},
    ],
)
def test_unusual_fields_match_the_full_decoder(fields):
    compare([[_image(**fields)], [_image()], [_image(**fields)]])


def test_key_order_and_trailing_bytes(wire):
    arr = wire.frame_array((12, 10))
    msg = wire.v2_image(0, arr)  # user_data (null) before data
    reordered = {k: msg[k] for k in ("type", "image_id", *(k for k in msg if k != "image_id"))}
    good = wire.v2(msg)
    compare([[good], [wire.v2(reordered)], [good + b"\x00"], [wire.v2(msg, magic=False)], [good]])


def _variants(wire):
    """(primer, image) pairs of several layouts, the primer an earlier image of the series.

    Image ids >= 24, so every integer token is multi-byte and the fixed layout is in use.
    """
    arr = wire.frame_array((8, 8))
    two = {"threshold_1": arr, "threshold_2": arr + 1}
    series = [
        encode_series(40, frame_shape=(8, 8)),
        encode_series(40, frame_shape=(8, 8), compression="lz4"),
        encode_series(40, frame_shape=(8, 8), compression="none", channels=("a", "b")),
        appendix_series(40),
    ]
    pairs = [(msgs[30][0], msgs[31][0]) for msgs in series]
    pairs.append(
        (
            wire.v2(wire.v2_image(30, two), magic=False),
            wire.v2(wire.v2_image(31, two), magic=False),
        )
    )
    return pairs


@pytest.mark.parametrize("index", range(5))
def test_every_single_byte_change_and_cut(wire, index):
    """Exhaustive: each byte of the head set to 0x00 / 0xff / +-1, and every truncation."""
    primer, msg = _variants(wire)[index]
    mutated = []
    for pos in range(min(len(msg), 320)):
        for value in {0x00, 0xFF, (msg[pos] + 1) & 0xFF, (msg[pos] - 1) & 0xFF}:
            if value != msg[pos]:
                mutated.append([msg[:pos] + bytes([value]) + msg[pos + 1 :]])
    mutated += [[msg[:cut]] for cut in range(len(msg))]
    for m in mutated:  # after a good message of the same series (the template is in use)
        compare([[primer], [msg], m])


@FUZZ
@given(st.data())
def test_mutated_v2_messages(wire, data):
    primer, msg = data.draw(st.sampled_from(_variants(wire)))
    msg = bytearray(msg)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(msg) - 1))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            msg[pos] = data.draw(st.integers(0, 255))
        elif action == "insert":
            msg[pos:pos] = data.draw(st.binary(min_size=1, max_size=9))
        else:
            del msg[pos : pos + data.draw(st.integers(1, 9))]
    events = compare([[primer], [bytes(msg)]])[1]
    assert all(isinstance(e, Frame | Rejected) for e in events)


@FUZZ
@given(st.data())
def test_mutated_v1_messages(wire, data):
    msgs = encode_series(3, fmt="json", frame_shape=(8, 8), compression="bslz4")
    lz4 = encode_series(3, fmt="json", frame_shape=(8, 8), compression="lz4")
    msg = [bytearray(p) for p in data.draw(st.sampled_from([msgs[2], lz4[2]]))]
    for _ in range(data.draw(st.integers(1, 3))):
        part = msg[data.draw(st.sampled_from([0, 1, 2, 3]))]
        pos = data.draw(st.integers(0, len(part) - 1))
        if data.draw(st.booleans()):
            part[pos] = data.draw(st.sampled_from(b' \t{}[],:"-.e0123456789abcxyz\\\xff'))
        else:
            del part[pos]
    if data.draw(st.booleans()):
        msg = msg[: data.draw(st.integers(1, 5))]
    compare([msgs[0], msgs[1], [bytes(p) for p in msg]])


@pytest.mark.parametrize(
    "part",
    [
        b'{"htype":"dimage-1.0","series":3,"frame":1,"hash":""}',
        b'{ "htype" : "dimage-1.0" ,\n "series" : 3 , "frame" : 1 }',
        b'{"htype": "dimage-1.0", "series": 3, "frame": 01}',
        b'{"htype": "dimage-1.0", "series": 3, "frame": -1}',
        b'{"htype": "dimage-1.0", "series": 3, "frame": 1.0}',
        b'{"htype": "dimage-1.1", "series": 3, "frame": 1}',
        b'{"htype": "dimage-1.0", "series": 3, "frame": 1, "frame": 2}',
        b'{"htype": "dimage-1.0", "series": 3, "frame": ' + b"9" * 30 + b"}",
        b'{"htype": "dimage-1.0", "series": 3, "frame": 1, "hash": "\\u0041"}',
        b'{"htype": "dimage-1.0", "series": 3, "frame": 1, "hash": "' + b"a" * 300 + b'"}',
        b'{"htype": "dimage-1.0",' + b" " * 100 + b'"series": 3, "frame": 1}',
        b'{"htype": "dimage-1.0",' + b" " * (5 << 20) + b'"series": 3, "frame": 1}',
    ],
)
@pytest.mark.parametrize("encoding", ["bs16-lz4<", "lz4<", "<", ">"])
def test_v1_json_variants(wire, part, encoding):
    arr = wire.frame_array((8, 6))
    msg = wire.v1_image(1, arr, encoding=encoding)
    compare([wire.v1_header(), msg, [part, *msg[1:]], msg[:3], [*msg[:3], b"{}"]])


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_shape": (192, 192)},
        {"frame_shape": (256, 256), "compression": "none"},
        {"frame_shape": (192, 192), "fmt": "json"},
        {"frame_shape": (64, 64), "channels": ("threshold_1", "threshold_2")},
    ],
)
def test_benchmark_series_decode_equally(kwargs):
    """The messages of the receiver microbenchmark (see the fast-path report): equal events."""
    events = compare(encode_series(600, **kwargs))
    frames = [e for ev in events for e in ev if isinstance(e, Frame)]
    assert len(frames) == 600 * len(kwargs.get("channels", (1,)))
    assert all(f.codec in (Codec.BSLZ4, Codec.RAW) for f in frames)
