"""External NeXus tools read the file; inspect_file; summaries; codecs on their own."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import h5py
import hdf5plugin  # noqa: F401 - registers the filters for reading
import numpy as np
import pytest
from stemdaq.config import Calibration
from stemdaq.errors import DecodeError
from stemdaq.models import Codec
from stemdaq.writer import SummaryAccumulator, decode_chunk, encode_chunk, inspect_file
from writer_helpers import DATA, FULL_METADATA, config, frame_data, make_frame, write_scan

CAL = Calibration(camera_length=0.15, beam_energy=200e3)


def test_nxload_default_plot_is_the_4d_intensity(tmp_path):
    from nexusformat.nexus import nxload

    final, _ = write_scan(tmp_path / "p.nxs", config(calibration=CAL), summary=True)
    root = nxload(str(final))
    try:
        data = root.plottable_data
        assert data.nxpath == DATA
        assert data.nxsignal.nxname == "intensity" and data.nxsignal.shape == (3, 4, 12, 16)
        assert [a.nxname for a in data.nxaxes] == ["axis_m", "axis_k", "axis_j", "axis_i"]
    finally:
        root.nxfile.close()


def _pynx(path) -> list[str]:
    exe = shutil.which("pynx")
    if exe is None:  # pragma: no cover - pynxtools is a test dependency
        pytest.skip("pynx not installed")
    out = subprocess.run([exe, "validate", str(path)], capture_output=True, text=True, timeout=120)
    return (out.stdout + out.stderr).splitlines()


@pytest.mark.validator
def test_pynx_validate_with_and_without_user_metadata(tmp_path):
    full, _ = write_scan(
        tmp_path / "full.nxs",
        config(metadata=FULL_METADATA, calibration=CAL, is_simulation=True),
        summary=True,
    )
    lines = _pynx(full)
    assert any("is valid according to the `NXem`" in ln for ln in lines), lines
    assert not [ln for ln in lines if "WARNING" in ln or "ERROR" in ln], lines

    bare, _ = write_scan(tmp_path / "bare.nxs", config(), summary=True)
    lines = _pynx(bare)
    complaints = [ln for ln in lines if "WARNING" in ln or "ERROR" in ln]
    assert any("NOT valid" in ln for ln in complaints)
    missing = sorted(
        re.findall(r"required field (\S+) hasn't been supplied", "\n".join(complaints))
    )
    assert missing == sorted(
        [
            "/entry/measurement/instrument/ebeam_column/electron_source/emitter_type",
            "/entry/measurement/instrument/fabrication/model",
            "/entry/measurement/instrument/fabrication/vendor",
            "/entry/sample/atom_types",
            "/entry/sample/preparation_date",
        ]
    )
    other = [ln for ln in complaints if "hasn't been supplied" not in ln and "NOT valid" not in ln]
    assert not other, other
    # inspect lists exactly what the validator asked for
    report = inspect_file(bare)
    assert sorted(m.split(" ")[0] for m in report.missing_nxem) == missing


def test_inspect_reports_the_file(tmp_path):
    final, _ = write_scan(
        tmp_path / "i.nxs", config(metadata=FULL_METADATA, calibration=CAL), skip=(2,), summary=True
    )
    report = inspect_file(final)
    assert report.ok and report.missing_nxem == [] and report.state == "completed"
    main = report.images[0]
    assert main.path == DATA and main.shape == [3, 4, 12, 16] and main.dtype == "uint16"
    assert main.compression == "bitshuffle+lz4" and main.ratio > 1
    assert main.frames_written == 11 and main.frames_missing == 1
    assert main.axes == {"axis_m": "nm", "axis_k": "nm", "axis_j": "1/nm", "axis_i": "1/nm"}
    assert {im.path.rsplit("/", 2)[1] for im in report.images} == {
        "image1",
        "image_sum",
        "image_total",
        *report.live_images,
    }
    assert report.live_images == [
        "image_adf",
        "image_bf",
        "image_com_magnitude",
        "image_com_x",
        "image_com_y",
    ]
    js = json.loads(json.dumps(report.to_json()))
    assert js["ok"] is True and js["images"][0]["frames_missing"] == 1
    assert "image_4d" in str(report)


@pytest.mark.parametrize(
    "breakage", ["unlink_real", "bad_axes", "no_bookkeeping", "bad_default", "no_units"]
)
def test_inspect_flags_a_broken_layout(tmp_path, breakage):
    final, _ = write_scan(tmp_path / "b.nxs", config())
    with h5py.File(final, "r+") as f:
        g = f[DATA]
        if breakage == "unlink_real":
            del g["real"]
            g.create_dataset("real", data=np.zeros(3))
        elif breakage == "bad_axes":
            g.attrs["axes"] = ["axis_m", "axis_k", "axis_i", "axis_j"]
        elif breakage == "no_bookkeeping":
            del f["/entry/measurement/event1/image1/frames"]
        elif breakage == "bad_default":
            f["/entry/measurement/event1"].attrs["default"] = "nothing"
        elif breakage == "no_units":
            del g["axis_k"].attrs["units"]
    report = inspect_file(final)
    assert not report.ok and report.problems, breakage


def test_inspect_rejects_a_non_nexus_file(tmp_path):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    report = inspect_file(tmp_path / "plain.h5")
    assert not report.ok and "NXentry" in report.problems[0]


def test_summaries_in_the_file(tmp_path):
    final, frames = write_scan(
        tmp_path / "s.nxs", config(calibration=CAL), codec=Codec.LZ4, summary=True
    )
    stack = np.stack([frames[p] for p in range(12)]).astype(np.uint64)
    with h5py.File(final, "r") as f:
        ev = f["/entry/measurement/event1"]
        np.testing.assert_array_equal(ev["image_sum/image_2d/intensity"][()], stack.sum(axis=0))
        np.testing.assert_array_equal(
            ev["image_total/image_2d/intensity"][()], stack.sum(axis=(1, 2)).reshape(3, 4)
        )
        assert ev["image_sum/image_2d/axis_i"].attrs["units"] == "1/nm"
        assert ev["image_total/image_2d/axis_i"].attrs["units"] == "nm"
        assert ev["image_sum/summary/frames_included"][()].all()


def test_summary_accumulator_never_blocks_and_records_subsampling():
    acc = SummaryAccumulator((10, 10), (64, 64), "uint16", max_queue=2)
    frames = [make_frame(p, frame_data(p, (64, 64)), Codec.BSLZ4) for p in range(100)]
    t_offered = [acc.offer(p, fr) for p, fr in enumerate(frames)]
    pattern, total, included = acc.finish()
    assert included.sum() == sum(t_offered) == acc.included
    assert not all(t_offered), "a queue of 2 should have skipped some of 100 frames"
    idx = np.flatnonzero(included.ravel())
    expect = sum(frame_data(p, (64, 64)).astype(np.uint64) for p in idx)
    np.testing.assert_array_equal(pattern, expect)
    assert total.ravel()[idx[0]] == frame_data(idx[0], (64, 64)).sum()
    assert acc.finish()[2] is included  # idempotent
    assert acc.offer(0, frames[0]) is False


def test_summary_ignores_other_channels_and_corrupt_frames():
    acc = SummaryAccumulator((1, 3), (12, 16), "uint16")
    a = make_frame(0, frame_data(0), Codec.RAW, channel="threshold_1")
    b = make_frame(1, frame_data(1), Codec.RAW, channel="threshold_2")
    bad = make_frame(2, frame_data(2), Codec.BSLZ4, channel="threshold_1")
    bad.payload = bad.payload[:-5]
    assert acc.offer(0, a) and not acc.offer(1, b) and acc.offer(2, bad)
    _, _, included = acc.finish()
    assert included.tolist() == [[True, False, False]] and acc.failed == 1


@pytest.mark.parametrize("compression", ["bslz4", "lz4", "zstd", "gzip", "none", "blosc"])
def test_encode_chunk_matches_the_hdf5_filter(tmp_path, compression):
    """Our encoder's bytes, written directly, read back through the real HDF5 filter."""
    from stemdaq.writer.codecs import filter_kwargs

    arr = frame_data(3, (33, 17), "uint32")
    chunk = encode_chunk(arr, compression, 5)
    with h5py.File(tmp_path / "e.h5", "w") as f:
        ds = f.create_dataset(
            "d",
            shape=(1, 33, 17),
            dtype="uint32",
            chunks=(1, 33, 17),
            **filter_kwargs(compression, 5),
        )
        if isinstance(chunk, np.ndarray):
            assert compression == "blosc"
            ds[0] = chunk
        else:
            ds.id.write_direct_chunk((0, 0, 0), chunk)
    with h5py.File(tmp_path / "e.h5", "r") as f:
        np.testing.assert_array_equal(f["d"][0], arr)


@pytest.mark.parametrize("codec", [Codec.RAW, Codec.BSLZ4, Codec.LZ4])
def test_decode_chunk_of_independent_payloads(codec):
    arr = frame_data(9, (12, 16), "uint16")
    frame = make_frame(0, arr, codec)
    np.testing.assert_array_equal(decode_chunk(frame.payload, codec, (12, 16), "uint16"), arr)
    np.testing.assert_array_equal(
        decode_chunk(memoryview(frame.payload), codec, (12, 16), "uint16"), arr
    )
    with pytest.raises(DecodeError):
        decode_chunk(frame.payload[:-1], codec, (12, 16), "uint16")


def test_lz4_multi_block_and_incompressible_blocks():
    from stemdaq.writer.codecs import lz4_frame

    rng = np.random.default_rng(1)
    arr = np.concatenate([np.zeros(3000, np.uint8), rng.integers(0, 255, 3000, dtype=np.uint8)])
    payload = lz4_frame(arr.tobytes(), block_bytes=1024)
    np.testing.assert_array_equal(decode_chunk(payload, Codec.LZ4, (6000,), "uint8"), arr)


def test_summary_keeps_to_its_cpu_budget_and_records_what_it_skipped():
    """A tiny CPU share: once its 0.05 s allowance is used, the accumulator skips, never waits."""
    import time

    acc = SummaryAccumulator((40, 40), (256, 256), "uint16", max_queue=2000, cpu_share=1e-6)
    frame = make_frame(0, frame_data(0, (256, 256)), Codec.BSLZ4)
    offered = []
    for p in range(1600):
        offered.append(acc.offer(p, frame))
        if p % 100 == 99:
            time.sleep(0.05)  # let the thread work through what it was given
    _, _, included = acc.finish()
    assert acc.skipped > 0 and not offered[-1]
    assert included.sum() == acc.included == sum(offered)
