"""Stream v2 / v1 messages as bytes: decoded here independently and compared bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from sim_wire import decode_v1_image, decode_v2
from stemdaq.sim import FrameGenerator, default_scan_shape, encode_series
from stemdaq.sim.compress import bslz4, lz4_hdf5
from stemdaq.sim.faults import WRONG_SERIES_OFFSET, InjectionLog

DTYPES = ["uint8", "uint16", "uint32"]
COMPRESSIONS = ["bslz4", "lz4", "none"]


def _gen(
    n: int, shape: tuple[int, int] = (96, 96), dtype: str = "uint16", seed: int = 0
) -> FrameGenerator:
    return FrameGenerator(shape, dtype, default_scan_shape(n), seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_v2_frames_bit_for_bit(dtype: str, compression: str) -> None:
    msgs = encode_series(6, frame_shape=(96, 130), dtype=dtype, compression=compression, seed=2)
    assert all(len(m) == 1 and m[0][:3] == b"\xd9\xd9\xf7" for m in msgs)
    decoded = [decode_v2(m[0]) for m in msgs]
    assert [d["type"] for d in decoded] == ["start"] + ["image"] * 6 + ["end"]
    gen = _gen(6, (96, 130), dtype, 2)
    for i, d in enumerate(decoded[1:-1]):
        assert d["image_id"] == i and d["series_id"] == 1
        frame = d["data"]["threshold_1"]
        assert frame.dtype == np.dtype(dtype) and frame.shape == (96, 130)
        np.testing.assert_array_equal(frame, gen.frame(i))


def test_v2_start_image_end_fields() -> None:
    start, image, *_, end = (
        decode_v2(m[0]) for m in encode_series(3, frame_shape=(96, 128), frame_time=0.002)
    )
    for key in (
        "series_id",
        "series_unique_id",
        "arm_date",
        "beam_center_x",
        "beam_center_y",
        "channels",
        "count_time",
        "frame_time",
        "detector_description",
        "detector_serial_number",
        "image_dtype",
        "image_size_x",
        "image_size_y",
        "incident_energy",
        "incident_wavelength",
        "number_of_images",
        "pixel_size_x",
        "pixel_size_y",
        "saturation_value",
        "sensor_material",
        "sensor_thickness",
        "threshold_energy",
        "user_data",
    ):
        assert key in start, key
    assert (
        start["image_size_x"] == 128
        and start["image_size_y"] == 96
        and start["number_of_images"] == 3
    )
    assert start["channels"] == ["threshold_1"] or tuple(start["channels"]) == ("threshold_1",)
    assert start["saturation_value"] == 65535 and start["sensor_material"] == "Si"
    assert list(image)[:9] == [
        "type",
        "series_id",
        "series_unique_id",
        "image_id",
        "real_time",
        "series_date",
        "start_time",
        "stop_time",
        "data",
    ]
    assert list(image["real_time"]) == [100_000, 50_000_000]
    assert list(image["stop_time"]) == [100_000, 50_000_000]
    assert end == {"type": "end", "series_id": 1, "series_unique_id": start["series_unique_id"]}
    assert image["series_unique_id"] == start["series_unique_id"]


def test_v2_header_detail_all_and_two_channels() -> None:
    msgs = encode_series(2, header_detail="all", channels=("threshold_1", "threshold_2"))
    start, first = decode_v2(msgs[0][0]), decode_v2(msgs[1][0])
    assert set(start["flatfield"]) == {"threshold_1", "threshold_2"}
    assert start["pixel_mask"]["threshold_1"].dtype == np.dtype("<u4")
    gen = _gen(2)
    np.testing.assert_array_equal(first["data"]["threshold_1"], gen.frame(0, channel=0))
    np.testing.assert_array_equal(first["data"]["threshold_2"], gen.frame(0, channel=1))
    assert "flatfield" not in decode_v2(encode_series(1)[0][0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_v1_parts_hash_and_frames(dtype: str, compression: str) -> None:
    msgs = encode_series(
        4, fmt="json", frame_shape=(96, 128), dtype=dtype, compression=compression, series_id=9
    )
    header, images, end = msgs[0], msgs[1:-1], msgs[-1]
    assert json.loads(header[0]) == {"htype": "dheader-1.0", "series": 9, "header_detail": "basic"}
    config = json.loads(header[1])
    assert len(header) == 2
    for key in (
        "nimages",
        "ntrigger",
        "trigger_mode",
        "x_pixels_in_detector",
        "y_pixels_in_detector",
        "bit_depth_image",
        "compression",
        "count_time",
        "frame_time",
        "description",
        "detector_number",
        "x_pixel_size",
        "software_version",
    ):
        assert key in config, key
    assert (
        config["x_pixels_in_detector"] == 128
        and config["bit_depth_image"] == 8 * np.dtype(dtype).itemsize
    )
    gen = _gen(4, (96, 128), dtype)
    for i, parts in enumerate(images):
        assert len(parts) == 4
        head, frame = decode_v1_image(parts)
        assert head["series"] == 9 and head["frame"] == i
        desc = json.loads(parts[1])
        assert desc["shape"] == [128, 96]
        assert (
            desc["encoding"]
            == {"bslz4": f"bs{8 * np.dtype(dtype).itemsize}-lz4<", "lz4": "lz4<", "none": "<"}[
                compression
            ]
        )
        np.testing.assert_array_equal(frame, gen.frame(i))
        assert isinstance(json.loads(parts[3])["start_time"], int)
    assert end == [b'{"htype": "dseries_end-1.0", "series": 9}']


@pytest.mark.parametrize(("detail", "n_parts"), [("none", 1), ("basic", 2), ("all", 8)])
def test_v1_header_detail_and_split_header(detail: str, n_parts: int) -> None:
    msgs = encode_series(1, fmt="json", header_detail=detail)
    assert len(msgs[0]) == n_parts and len(msgs) == 3
    if detail == "all":
        assert [json.loads(msgs[0][k])["htype"] for k in (2, 4, 6)] == [
            "dflatfield-1.0",
            "dpixelmask-1.0",
            "dcountrate_table-1.0",
        ]
        assert len(msgs[0][3]) == 96 * 96 * 4
    split = encode_series(1, fmt="json", header_detail=detail, split_header=True)
    assert [m[0] for m in split[:n_parts]] == msgs[0] and all(len(m) == 1 for m in split[:n_parts])


@pytest.mark.parametrize("dtype", DTYPES)
def test_framings_decode_with_hdf5_filters(tmp_path: Path, dtype: str) -> None:
    frame = FrameGenerator((97, 130), dtype, (2, 2), seed=5).frame(1)
    path = tmp_path / "chunks.h5"
    with h5py.File(path, "w") as f:
        for name, filt, chunk in (
            ("bslz4", hdf5plugin.Bitshuffle(cname="lz4"), bslz4(frame)),
            ("lz4", hdf5plugin.LZ4(), lz4_hdf5(frame)),
            ("lz4_blocks", hdf5plugin.LZ4(), lz4_hdf5(frame, 4096)),
        ):
            ds = f.create_dataset(
                name, shape=(1, *frame.shape), dtype=dtype, chunks=(1, *frame.shape), **filt
            )
            ds.id.write_direct_chunk((0, 0, 0), chunk)
    with h5py.File(path) as f:
        for name in ("bslz4", "lz4", "lz4_blocks"):
            np.testing.assert_array_equal(f[name][0], frame)


def _ids(msgs: list[list[bytes]]) -> list[tuple[int, int]]:
    out = []
    for m in msgs:
        d = decode_v2(m[0])
        if d["type"] == "image":
            out.append((d["series_id"], d["image_id"]))
    return out


def test_faults_drop_duplicate_reorder_wrong_series() -> None:
    log = InjectionLog()
    msgs = encode_series(
        8, series_id=4, faults="drop=1;duplicate=3;reorder=5;wrong_series=2", log=log
    )
    assert _ids(msgs) == [
        (4, 0),
        (4 + WRONG_SERIES_OFFSET, 2),
        (4, 3),
        (4, 3),
        (4, 4),
        (4, 6),
        (4, 5),
        (4, 7),
    ]
    assert decode_v2(msgs[-1][0])["type"] == "end"
    assert sorted(e[0] for e in log.entries) == ["drop", "duplicate", "reorder", "wrong_series"]
    assert all(e.series_id == 4 for e in log.entries)


@pytest.mark.parametrize("fmt", ["cbor", "json"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_corrupt_and_truncate_are_undecodable(fmt: str, compression: str) -> None:
    msgs = encode_series(3, fmt=fmt, compression=compression, faults="corrupt=0;truncate=1")
    good = encode_series(3, fmt=fmt, compression=compression)
    for k in (1, 2):  # image 0 corrupt, image 1 truncated
        if fmt == "cbor":
            with pytest.raises(Exception):  # noqa: B017 - any decode failure will do
                decode_v2(msgs[k][0])
        else:
            assert len(msgs[k][2]) != len(good[k][2]) or msgs[k][2] != good[k][2]
            assert msgs[k][0] == good[k][0]  # the header still carries the good hash
            with pytest.raises(Exception):  # noqa: B017
                decode_v1_image(msgs[k])
    if fmt == "json":
        assert hashlib.md5(msgs[3][2]).hexdigest() == json.loads(msgs[3][0])["hash"]


def test_malformed_abort_after_and_no_end() -> None:
    log = InjectionLog()
    msgs = encode_series(10, faults="malformed=1;abort_after=4;no_end", log=log)
    assert len(msgs) == 1 + 4  # start + images 0..3, no end
    with pytest.raises(Exception):  # noqa: B017
        decode_v2(msgs[2][0])
    assert [e[0] for e in log.entries] == ["malformed", "abort_after"]
    msgs = encode_series(3, fmt="json", faults="no_end;malformed=0", log=log)
    assert len(msgs) == 4 and b"dseries_end" not in msgs[-1][0]
    with pytest.raises(ValueError):
        json.loads(msgs[1][0])
