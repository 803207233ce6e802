"""Stream v1 (JSON multipart) decoding."""

from __future__ import annotations

import json
import struct

import lz4.block
import numpy as np
import pytest
from stemdaq.models import Codec, DropReason, Frame, Rejected, SeriesEnd, SeriesStart
from stemdaq.receiver import V1_CHANNEL, StreamDecoder


def _one(events, kind):
    assert len(events) == 1, events
    assert isinstance(events[0], kind), events
    return events[0]


@pytest.mark.parametrize("detail", ["basic", "all"])
def test_header_with_config(wire, detail):
    dec = StreamDecoder()
    start = _one(dec.decode(wire.v1_header(series=3, detail=detail)), SeriesStart)
    assert start.series_id == 3 and start.protocol == "stream1"
    assert start.n_images == 16 and start.frame_shape == (192, 192)
    assert start.dtype is None  # decided by the first frame, not bit_depth_image
    det = start.detector
    assert det.description == "Dectris QUADRO Si 250K" and det.serial_number == "E-02-0002"
    assert (
        det.software_version == "1.8.0"
        and det.pixel_size_x == 7.5e-5
        and det.pixel_size_y == 7.5e-5
    )
    assert det.bit_depth_image == 16 and det.count_time == 0.0009 and det.frame_time == 0.001
    assert det.sensor_material == "Si" and det.sensor_thickness == 4.5e-4
    assert (det.beam_center_x, det.beam_center_y) == (10.0, 20.0)
    assert det.detector_distance == 0.125 and det.incident_energy == 200000.0
    assert det.incident_wavelength == 0.0251 and det.compression == "bslz4"
    assert det.threshold_energy == {V1_CHANNEL: 4000.0}
    assert start.raw["header_detail"] == detail and start.raw["roi_mode"] == "disabled"
    assert start.raw["trigger_mode"] == "exts"


def test_header_detail_none(wire):
    start = _one(StreamDecoder().decode(wire.v1_header(series=4, detail="none")), SeriesStart)
    assert start.series_id == 4 and start.n_images is None and start.frame_shape is None


@pytest.mark.parametrize("detail", ["none", "basic", "all"])
def test_header_appendix_part(wire, detail):
    parts = wire.v1_header(detail=detail, appendix=json.dumps({"user": "x"}).encode())
    start = _one(StreamDecoder().decode(parts), SeriesStart)
    assert start.raw["header_appendix"] == {"user": "x"}
    if detail != "none":
        assert start.n_images == 16


@pytest.mark.parametrize(
    ("mode", "nimages", "ntrigger", "expected"),
    [
        ("exte", 1, 64, 64),
        ("inte", 5, 64, 64),
        ("exts", 64, 1, 64),
        ("ints", 8, 4, 32),
        ("exts", 8, 4, 32),
    ],
)
def test_frames_per_series_by_trigger_mode(wire, mode, nimages, ntrigger, expected):
    cfg = wire.v1_config(nimages=nimages, ntrigger=ntrigger, trigger_mode=mode)
    start = _one(StreamDecoder().decode(wire.v1_header(config=cfg)), SeriesStart)
    assert start.n_images == expected


def test_split_header_emits_start_when_config_arrives(wire):
    """LiberTEM-live's ZMQReplay: dheader and config as separate single-part messages."""
    dec = StreamDecoder()
    header = wire.v1_header(series=5, detail="basic")
    assert dec.decode([header[0]]) == []
    start = _one(dec.decode([header[1]]), SeriesStart)
    assert start.series_id == 5 and start.n_images == 16 and start.frame_shape == (192, 192)
    arr = wire.frame_array((192, 192))
    frame = _one(dec.decode(wire.v1_image(0, arr, series=5)), Frame)
    assert frame.series_id == 5
    assert dec.quirks["split_header"] == 1


def test_split_header_all_swallows_blob_messages(wire):
    dec = StreamDecoder()
    header = wire.v1_header(series=6, detail="all", appendix=b"free text")
    assert dec.decode([header[0]]) == []
    events = []
    for part in header[1:]:
        events += dec.decode([part])
    assert [type(e) for e in events] == [SeriesStart]
    frame = _one(dec.decode(wire.v1_image(0, wire.frame_array((192, 192)), series=6)), Frame)
    assert frame.frame_id == 0


def test_split_header_without_config_emits_start_before_first_image(wire):
    dec = StreamDecoder()
    assert dec.decode([wire.v1_header(series=8)[0]]) == []
    events = dec.decode(wire.v1_image(0, wire.frame_array((16, 16)), series=8))
    assert [type(e) for e in events] == [SeriesStart, Frame]
    assert events[0].series_id == 8 and events[0].n_images is None


def test_split_header_then_end(wire):
    dec = StreamDecoder()
    assert dec.decode([wire.v1_header(series=8)[0]]) == []
    events = dec.decode(wire.v1_end(8))
    assert [type(e) for e in events] == [SeriesStart, SeriesEnd]


def test_lone_config_outside_header_is_rejected(wire):
    rej = _one(StreamDecoder().decode([wire.j(wire.v1_config())]), Rejected)
    assert rej.reason is DropReason.MALFORMED


def test_broken_config_part_gives_start_and_rejected(wire):
    parts = wire.v1_header(series=2)
    parts[1] = b"{broken"
    events = StreamDecoder().decode(parts)
    assert [type(e) for e in events] == [SeriesStart, Rejected]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("encoding", ["<", ">", "lz4<", "bs8-lz4<", "bs16-lz4<", "bs32-lz4<"])
def test_image_every_encoding_round_trips(wire, dtype, encoding):
    arr = wire.frame_array((48, 40), dtype, seed=5)  # (y, x)
    frame = _one(StreamDecoder().decode(wire.v1_image(2, arr, series=3, encoding=encoding)), Frame)
    assert (frame.series_id, frame.frame_id, frame.channel) == (3, 2, V1_CHANNEL)
    assert frame.shape == (48, 40) and frame.dtype == dtype
    assert frame.start_time == pytest.approx(2e-3) and frame.stop_time == pytest.approx(2.9e-3)
    assert frame.real_time == pytest.approx(0.9e-3)
    if encoding in ("<", ">"):
        assert frame.codec is Codec.RAW
        back = np.frombuffer(frame.payload, dtype=np.dtype(dtype).newbyteorder("<")).reshape(
            frame.shape
        )
    elif encoding == "lz4<":
        assert frame.codec is Codec.LZ4
        orig, block, size = struct.unpack_from(">QII", frame.payload)
        assert orig == block == arr.nbytes and size == len(frame.payload) - 16
        back = wire.unlz4_hdf5(frame.payload, frame.shape, dtype)
    else:
        assert frame.codec is Codec.BSLZ4
        back = wire.unbslz4(frame.payload, frame.shape, dtype)
    np.testing.assert_array_equal(back, arr)


def test_raw_payload_is_a_zero_copy_view(wire):
    arr = wire.frame_array((16, 16))
    parts = [memoryview(p) for p in wire.v1_image(0, arr, encoding="<")]
    frame = _one(StreamDecoder().decode(parts), Frame)
    assert isinstance(frame.payload, memoryview) and frame.payload.obj is parts[2].obj


@pytest.mark.parametrize("encoding", ["lz4>", "bs16-lz4>"])
def test_big_endian_compressed_is_decoded_to_little_endian_raw(wire, encoding):
    arr = wire.frame_array((24, 24), "uint16")
    be = arr.astype(">u2")
    parts = wire.v1_image(0, arr, encoding="<")
    blob = (
        lz4.block.compress(be.tobytes(), store_size=False) if encoding == "lz4>" else wire.bslz4(be)
    )
    parts[1] = wire.j(
        {
            "htype": "dimage_d-1.0",
            "shape": [24, 24],
            "type": "uint16",
            "encoding": encoding,
            "size": len(blob),
        }
    )
    parts[2] = blob
    frame = _one(StreamDecoder().decode(parts), Frame)
    assert frame.codec is Codec.RAW
    np.testing.assert_array_equal(np.frombuffer(frame.payload, "<u2").reshape(24, 24), arr)


def test_image_with_appendix_and_without_dconfig(wire):
    arr = wire.frame_array((16, 16))
    frame = _one(StreamDecoder().decode(wire.v1_image(1, arr, appendix=b'{"a": 1}')), Frame)
    assert frame.frame_id == 1 and frame.real_time == pytest.approx(0.9e-3)
    frame = _one(StreamDecoder().decode(wire.v1_image(1, arr, dconfig=False)), Frame)
    assert frame.real_time is None


def test_non_square_shape_is_x_then_y(wire):
    arr = wire.frame_array((10, 30), "uint8")  # 10 rows (y), 30 columns (x)
    parts = wire.v1_image(0, arr, encoding="<")
    assert json.loads(parts[1])["shape"] == [30, 10]
    frame = _one(StreamDecoder().decode(parts), Frame)
    assert frame.shape == (10, 30)


@pytest.mark.parametrize("htype", ["dseries_end-1.0", "deseries_end-1.0"])
def test_series_end_and_libertem_typo(wire, htype):
    dec = StreamDecoder()
    assert dec.decode(wire.v1_end(3, htype)) == [SeriesEnd(3)]
    assert dec.quirks.get("typo_end_htype", 0) == (htype != "dseries_end-1.0")


def _set_desc(parts, **changes):
    desc = json.loads(parts[1])
    desc.update(changes)
    parts[1] = json.dumps(desc).encode()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda w, p: p.__setitem__(2, p[2][:-3]), "corrupt"),  # size field no longer matches
        (
            lambda w, p: (p.__setitem__(2, p[2][:-3]), _set_desc(p, size=len(p[2]))),
            "corrupt",
        ),  # truncated
        (lambda w, p: _set_desc(p, encoding="zstd<"), "corrupt"),
        (lambda w, p: _set_desc(p, encoding="bs16<"), "corrupt"),
        (lambda w, p: _set_desc(p, type="complex64"), "corrupt"),
        (lambda w, p: _set_desc(p, shape=[16]), "malformed"),
        (lambda w, p: _set_desc(p, shape=[16, 15]), "corrupt"),
        (lambda w, p: p.__setitem__(1, b"not json"), "malformed"),
        (lambda w, p: p.__setitem__(1, w.j({"htype": "dconfig-1.0"})), "malformed"),
        (lambda w, p: p.__setitem__(2, b"\0" * 4), "corrupt"),
        (lambda w, p: p.__setitem__(0, w.j({"htype": "dimage-1.0", "series": 3})), "malformed"),
        (
            lambda w, p: p.__setitem__(0, w.j({"htype": "dimage-9.9x", "frame": "1", "series": 3})),
            "malformed",
        ),
        (lambda w, p: p.__setitem__(0, w.j({"htype": "dwhatever-1.0"})), "malformed"),
        (lambda w, p: p.__setitem__(0, b"[1, 2]"), "malformed"),
        (lambda w, p: p.__setitem__(0, b"{not json"), "malformed"),
        (lambda w, p: p.pop() and p.pop(), "malformed"),  # 2 parts: stray after abort
    ],
)
def test_bad_images_are_rejected(wire, mutate, reason):
    arr = wire.frame_array((16, 16))
    parts = wire.v1_image(1, arr)
    mutate(wire, parts)
    events = StreamDecoder().decode(parts)
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    assert events[0].reason.value == reason


def test_bare_lz4_block_as_long_as_the_frame_is_stored_raw(wire):
    """A bare block exactly orig_size long would read as 'stored raw' to the HDF5 LZ4 filter."""
    from stemdaq.receiver import lz4_hdf5_frame

    rng = np.random.default_rng(0)
    hit = 0
    for n in range(2580, 2620):
        for zeros in range(
            20, 40
        ):  # random bytes + a zero tail: blocks a few bytes either side of n
            raw = rng.integers(0, 256, n - zeros, dtype=np.uint8).tobytes() + bytes(zeros)
            block = lz4.block.compress(raw, store_size=False)
            hit += len(block) == n
            framed = lz4_hdf5_frame(block, n)
            assert wire.unlz4_hdf5(framed, (1, n), "uint8").tobytes() == raw
    assert hit > 0  # the ambiguous case did occur
