"""Stream v2 (CBOR) decoding."""

from __future__ import annotations

import struct

import cbor2
import numpy as np
import pytest
from cbor2 import CBORTag
from stemdaq.models import Codec, DropReason, Frame, Rejected, SeriesEnd, SeriesStart
from stemdaq.receiver import StreamDecoder


def _one(events, kind):
    assert len(events) == 1, events
    assert isinstance(events[0], kind), events
    return events[0]


@pytest.mark.parametrize("magic", [True, False])
def test_start_message_fills_series_start(wire, magic):
    dec = StreamDecoder()
    start = _one(
        dec.decode([wire.v2(wire.v2_start(channels=("threshold_1", "threshold_2")), magic)]),
        SeriesStart,
    )
    assert start.series_id == 7 and start.protocol == "stream2" and start.unique_id == "uid-7"
    assert start.n_images == 16 and start.frame_shape == (192, 192) and start.dtype == "uint16"
    assert start.channels == ("threshold_1", "threshold_2")
    det = start.detector
    assert det.description == "Dectris ARINA Si 192x192" and det.serial_number == "E-01-0001"
    assert det.pixel_size_x == det.pixel_size_y == 1e-4
    assert det.sensor_material == "Si" and det.sensor_thickness == 4.5e-4
    assert det.count_time == 0.0009 and det.frame_time == 0.001
    assert (det.beam_center_x, det.beam_center_y) == (96.5, 95.25)
    assert det.incident_energy == 300000.0 and det.incident_wavelength == 0.0197
    assert det.saturation_value == 65535 and det.bit_depth_image == 16
    assert det.threshold_energy == {"threshold_1": 2000.0, "threshold_2": 4000.0}
    # other small fields are kept, the big arrays are not
    assert start.raw["arm_date"].startswith("2026-01-02T03:04:05")
    assert start.raw["goniometer"] == {"omega": {"increment": 0.0, "start": 0.0}}
    assert start.raw["detector_translation"] == [0.0, 0.0, 0.1]
    assert start.raw["user_data"] == {"operator": "test"}
    for big in ("flatfield", "pixel_mask", "countrate_correction_lookup_table"):
        assert big not in start.raw
    assert dec.quirks.get("no_magic", 0) == (0 if magic else 1)


def test_start_jungfraujoch_detector_distance_and_bad_field_types(wire):
    msg = wire.v2_start(detector_distance=0.2, pixel_size_x="wide", magic_number=42)
    start = _one(StreamDecoder().decode([wire.v2(msg)]), SeriesStart)
    assert start.detector.detector_distance == 0.2
    assert start.detector.pixel_size_x is None and start.raw["invalid_pixel_size_x"] == "wide"
    assert start.raw["magic_number"] == 42


def test_real_eiger2_sample_shape(wire):
    """Modeled on the decoded EIGER2 16M image (scaled down): tag40([[ny,nx], tag69(...)))."""
    arr = wire.frame_array((257, 129), "uint16")
    payload = wire.bslz4(arr)
    assert struct.unpack_from(">QI", payload) == (257 * 129 * 2, 8192)
    msg = {
        "type": "image",
        "series_id": 1,
        "series_unique_id": "u",
        "image_id": 0,
        "real_time": [215873, 50000000],
        "series_date": CBORTag(0, "2022-05-01T00:00:00Z"),
        "start_time": [0, 50000000],
        "stop_time": [215873, 50000000],
        "data": {
            "threshold_1": CBORTag(
                40, [[257, 129], CBORTag(69, CBORTag(56500, ["bslz4", 2, payload]))]
            )
        },
    }
    frame = _one(StreamDecoder().decode([wire.v2(msg)]), Frame)
    assert (frame.series_id, frame.frame_id, frame.channel) == (1, 0, "threshold_1")
    assert frame.shape == (257, 129) and frame.dtype == "uint16" and frame.codec is Codec.BSLZ4
    assert bytes(frame.payload) == payload
    assert frame.real_time == pytest.approx(215873 / 50000000)
    assert frame.start_time == 0.0 and frame.stop_time == pytest.approx(215873 / 50000000)
    np.testing.assert_array_equal(wire.unbslz4(frame.payload, frame.shape, frame.dtype), arr)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32"])
@pytest.mark.parametrize("codec", ["bslz4", "lz4", "raw"])
def test_image_every_typed_array_and_codec_round_trips(wire, dtype, codec):
    arr = wire.frame_array((96, 80), dtype, seed=3)
    frame = _one(StreamDecoder().decode([wire.v2(wire.v2_image(5, arr, codec=codec))]), Frame)
    assert frame.shape == (96, 80) and frame.dtype == dtype and frame.frame_id == 5
    assert frame.codec is Codec(codec)
    if codec == "bslz4":
        back = wire.unbslz4(frame.payload, frame.shape, dtype)
    elif codec == "lz4":
        back = wire.unlz4_hdf5(frame.payload, frame.shape, dtype)
    else:
        back = np.frombuffer(frame.payload, dtype=dtype).reshape(frame.shape)
    np.testing.assert_array_equal(back, arr)


def test_column_major_raw_is_transposed(wire):
    arr = np.arange(12, dtype="uint16").reshape(3, 4)
    msg = wire.v2_image(0, arr, codec="raw")
    msg["data"]["threshold_1"] = wire.mda(arr, "raw", column_major=True)
    frame = _one(StreamDecoder().decode([wire.v2(msg)]), Frame)
    np.testing.assert_array_equal(np.frombuffer(frame.payload, "uint16").reshape(3, 4), arr)


def test_column_major_compressed_is_rejected(wire):
    arr = wire.frame_array((16, 16))
    msg = wire.v2_image(0, arr)
    msg["data"]["threshold_1"] = CBORTag(1040, msg["data"]["threshold_1"].value)
    rej = _one(StreamDecoder().decode([wire.v2(msg)]), Rejected)
    assert rej.reason is DropReason.CORRUPT and (rej.series_id, rej.frame_id) == (7, 0)


def test_multi_channel_image_gives_one_frame_per_channel(wire):
    a, b = wire.frame_array((32, 32), seed=1), wire.frame_array((32, 32), seed=2)
    events = StreamDecoder().decode(
        [wire.v2(wire.v2_image(3, {"threshold_1": a, "threshold_2": b}))]
    )
    assert [type(e) for e in events] == [Frame, Frame]
    assert [e.channel for e in events] == ["threshold_1", "threshold_2"]
    np.testing.assert_array_equal(wire.unbslz4(events[1].payload, (32, 32), "uint16"), b)


def test_one_bad_channel_rejects_only_that_channel(wire):
    a = wire.frame_array((32, 32))
    msg = wire.v2_image(3, {"threshold_1": a, "threshold_2": a})
    msg["data"]["threshold_2"] = CBORTag(40, [[32, 32], CBORTag(69, b"short")])
    events = StreamDecoder().decode([wire.v2(msg)])
    assert isinstance(events[0], Frame)
    assert isinstance(events[1], Rejected) and events[1].reason is DropReason.CORRUPT
    assert events[1].frame_id == 3


def test_end_message(wire):
    assert StreamDecoder().decode([wire.v2(wire.v2_end(9))]) == [SeriesEnd(9)]


def test_zmq_frame_like_input_and_memoryview(wire):
    data = wire.v2(wire.v2_end(4))
    dec = StreamDecoder()
    assert dec.decode([memoryview(data)]) == [SeriesEnd(4)]
    assert dec.decode([bytearray(data)]) == [SeriesEnd(4)]


def test_rational_times_and_plain_numbers(wire):
    arr = wire.frame_array((8, 8))
    msg = wire.v2_image(0, arr, real_time=[1, 0], start_time=0.5, stop_time="x")
    frame = _one(StreamDecoder().decode([wire.v2(msg)]), Frame)
    assert frame.real_time is None and frame.start_time == 0.5 and frame.stop_time is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda m, p: (
                m["data"]["threshold_1"].value[1].value.value.__setitem__(2, p[:12] + b"\0" * 3)
            ),
            "corrupt",
        ),
        (lambda m, p: m["data"]["threshold_1"].value[1].value.value.__setitem__(1, 4), "corrupt"),
        (
            lambda m, p: m["data"]["threshold_1"].value[1].value.value.__setitem__(0, "zstd"),
            "corrupt",
        ),
        (
            lambda m, p: (
                m["data"]["threshold_1"]
                .value[1]
                .value.value.__setitem__(2, struct.pack(">QI", 99, 8192) + p[12:])
            ),
            "corrupt",
        ),
        (
            lambda m, p: m["data"]["threshold_1"].value[1].value.value.__setitem__(2, p[:-5]),
            "corrupt",
        ),
        (lambda m, p: m["data"]["threshold_1"].value.__setitem__(0, [32]), "malformed"),
        (lambda m, p: m["data"]["threshold_1"].value.__setitem__(0, [0, 32]), "malformed"),
        (lambda m, p: m["data"].__setitem__("threshold_1", b"raw"), "malformed"),
        (lambda m, p: m.__setitem__("data", {}), "malformed"),
        (lambda m, p: m.pop("image_id"), "malformed"),
        (lambda m, p: m.__setitem__("series_id", "7"), "malformed"),
        (lambda m, p: m.__setitem__("type", "spam"), "malformed"),
    ],
)
def test_bad_images_are_rejected_with_reason(wire, mutate, reason):
    arr = wire.frame_array((32, 32))
    msg = wire.v2_image(1, arr)
    mutate(msg, msg["data"]["threshold_1"].value[1].value.value[2])
    events = StreamDecoder().decode([wire.v2(msg)])
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    assert events[0].reason.value == reason


def test_typed_array_tag_must_match_bslz4_elem_size(wire):
    arr = wire.frame_array((32, 32), "uint16")
    msg = wire.v2_image(0, arr)
    mda = msg["data"]["threshold_1"]
    msg["data"]["threshold_1"] = CBORTag(40, [[32, 32], CBORTag(70, mda.value[1].value)])  # u32 tag
    rej = _one(StreamDecoder().decode([wire.v2(msg)]), Rejected)
    assert rej.reason is DropReason.CORRUPT


def test_not_a_map_and_garbage(wire):
    dec = StreamDecoder()
    assert _one(dec.decode([wire.v2([1, 2, 3])]), Rejected).reason is DropReason.MALFORMED
    assert _one(dec.decode([b"\xa1\x61"]), Rejected).reason is DropReason.MALFORMED
    assert _one(dec.decode([b"\x00\x01"]), Rejected).reason is DropReason.MALFORMED
    assert _one(dec.decode([]), Rejected).reason is DropReason.MALFORMED
    assert _one(dec.decode([b""]), Rejected).reason is DropReason.MALFORMED


def test_jungfraujoch_extra_message_types_are_ignored(wire):
    dec = StreamDecoder()
    assert dec.decode([wire.v2({"type": "calibration", "series_id": 1})]) == []
    assert dec.quirks["ignored_type_calibration"] == 1


def test_unparseable_datetime_does_not_lose_the_message(wire):
    start = _one(
        StreamDecoder().decode([cbor2.dumps(wire.v2_start(arm_date=CBORTag(0, "bad date")))]),
        SeriesStart,
    )
    assert start.raw["arm_date"] == "bad date"
