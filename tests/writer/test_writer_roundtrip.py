"""Frames in, the same bits out: every dtype, every compression, raw and pre-compressed."""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401 - registers the filters for reading
import numpy as np
import pytest
from stemdaq.errors import DecodeError
from stemdaq.models import AcquisitionState, Codec, Counters
from stemdaq.writer import NexusWriter
from stemdaq.writer.codecs import COMPRESSIONS
from writer_helpers import BOOK, DATA, config, frame_data, make_frame, start, write_scan

FILTER_IDS = {"bslz4": 32008, "lz4": 32004, "zstd": 32015, "blosc": 32001, "gzip": 1}


def _read(path):
    with h5py.File(path, "r") as f:
        ds = f[f"{DATA}/intensity"]
        dcpl = ds.id.get_create_plist()
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        return ds[()], ds.chunks, filters, f[f"{BOOK}/written"][()], f[f"{BOOK}/frame_id"][()]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_raw_frames_round_trip_bit_exact(tmp_path, dtype, compression):
    cfg = config(compression=compression, compression_level=3)
    final, frames = write_scan(tmp_path / "a.nxs", cfg, codec=Codec.RAW, dtype=dtype)
    data, chunks, filters, written, frame_id = _read(final)
    assert data.dtype == np.dtype(dtype) and chunks == (1, 1, 12, 16)
    assert filters == ([FILTER_IDS[compression]] if compression != "none" else [])
    for pos, arr in frames.items():
        np.testing.assert_array_equal(data.reshape(-1, 12, 16)[pos], arr)
    assert written.all() and (frame_id.ravel() == np.arange(12)).all()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("codec", [Codec.BSLZ4, Codec.LZ4])
def test_precompressed_frames_are_stored_unchanged(tmp_path, dtype, codec):
    final, frames = write_scan(tmp_path / "b.nxs", config(), codec=codec, dtype=dtype)
    data, _, filters, written, _ = _read(final)
    assert filters == [32008 if codec is Codec.BSLZ4 else 32004]
    for pos, arr in frames.items():
        np.testing.assert_array_equal(data.reshape(-1, 12, 16)[pos], arr)
    with h5py.File(final, "r") as f:  # the chunk bytes are the payload bytes: never recompressed
        ds = f[f"{DATA}/intensity"]
        _, raw = ds.id.read_direct_chunk((1, 2, 0, 0))
        assert raw == make_frame(6, frames[6], codec).payload


def test_odd_frame_sizes_and_bitshuffle_tail(tmp_path):
    """Frames whose element count is not a multiple of 8 (bitshuffle copies the tail raw)."""
    final, frames = write_scan(tmp_path / "c.nxs", config(), codec=Codec.RAW, shape=(7, 13))
    data, *_ = _read(final)
    for pos, arr in frames.items():
        np.testing.assert_array_equal(data.reshape(-1, 7, 13)[pos], arr)


def test_codec_mismatch_is_reencoded(tmp_path):
    """First frame bslz4 -> bitshuffle dataset; a later LZ4 or raw frame is converted."""
    w = NexusWriter(tmp_path / "m.nxs", config())
    w.open(
        start(),
        endpoint="tcp://x:1",
        channels=["threshold_1"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=Codec.BSLZ4,
    )
    assert w.filter_codec is Codec.BSLZ4
    arrs = {p: frame_data(p) for p in range(3)}
    for pos, codec in ((0, Codec.BSLZ4), (1, Codec.LZ4), (2, Codec.RAW)):
        frame = make_frame(pos, arrs[pos], codec)
        w.write(pos, 0, frame.payload, frame)  # given the wire payload: the writer converts it
    final = w.close(AcquisitionState.ABORTED, Counters(), None)
    data, *_ = _read(final)
    for pos, arr in arrs.items():
        np.testing.assert_array_equal(data[0, pos], arr)


def test_gaps_are_zeros_and_marked(tmp_path):
    final, frames = write_scan(
        tmp_path / "g.nxs", config(), skip=(3, 5), state=AcquisitionState.ABORTED
    )
    data, _, _, written, frame_id = _read(final)
    assert written.ravel().tolist() == [0 if p in (3, 5) else 1 for p in range(12)]
    assert frame_id.ravel()[3] == -1 and frame_id.ravel()[4] == 4
    assert not data.reshape(-1, 12, 16)[3].any()
    with h5py.File(final, "r") as f:
        assert f[f"{BOOK}/frames_written"][()] == 10 and f[f"{BOOK}/frames_missing"][()] == 2
        assert np.isnan(f[f"{BOOK}/start_time"][0, 3]) and f[f"{BOOK}/start_time"][
            1, 0
        ] == pytest.approx(4e-3)
        assert f["/entry/measurement/event1/acquisition/state"][()] == b"aborted"
        assert "end_time" in f["/entry"] and "end_time" in f["/entry/measurement/event1"]


MUTATIONS = {
    "truncated": lambda p: p[:-3],
    "trailing": lambda p: p + b"xx",
    "bad-size": lambda p: b"\0" * 8 + p[8:],  # header size field (raw: same length, not corrupt)
    "no-header": lambda p: p[:10],
}
CASES = [
    (c, m)
    for c in (Codec.BSLZ4, Codec.LZ4, Codec.RAW)
    for m in MUTATIONS
    if not (c is Codec.RAW and m == "bad-size")
]


@pytest.mark.parametrize(("codec", "mutation"), CASES)
def test_corrupt_payloads_raise_decode_error(tmp_path, codec, mutation):
    w = NexusWriter(tmp_path / "x.nxs", config(compression="bslz4"))
    w.open(
        start(),
        endpoint="tcp://x:1",
        channels=["c"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=codec,
    )
    frame = make_frame(0, frame_data(0), codec)
    frame.payload = MUTATIONS[mutation](frame.payload)
    with pytest.raises(DecodeError) as err:
        w.prepare(frame)
    assert err.value.reason == "corrupt"
    with pytest.raises(DecodeError):
        w.write(0, 0, frame.payload, frame)
    assert w.close(AcquisitionState.COMPLETED, Counters(), None) is not None


def test_wrong_frame_shape_is_rejected(tmp_path):
    w = NexusWriter(tmp_path / "s.nxs", config())
    w.open(
        start(),
        endpoint="tcp://x:1",
        channels=["c"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=Codec.RAW,
    )
    with pytest.raises(DecodeError) as err:
        w.prepare(make_frame(0, frame_data(0, (16, 12)), Codec.RAW))
    assert err.value.reason == "wrong_shape"
    w.close(AcquisitionState.FAILED, Counters(), None)


def test_close_without_open_and_twice(tmp_path):
    w = NexusWriter(tmp_path / "never.nxs", config())
    assert w.close(AcquisitionState.FAILED, Counters(), None) is None
    assert not any(tmp_path.iterdir())
    final, _ = write_scan(tmp_path / "twice.nxs", config())
    assert final == tmp_path / "twice.nxs" and final.exists()
    assert not (tmp_path / "twice.nxs.partial").exists()


def test_close_is_idempotent(tmp_path):
    w = NexusWriter(tmp_path / "i.nxs", config())
    w.open(
        start(),
        endpoint="tcp://x:1",
        channels=["c"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=Codec.RAW,
    )
    first = w.close(AcquisitionState.COMPLETED, Counters(), None)
    assert w.close(AcquisitionState.COMPLETED, Counters(), None) == first == tmp_path / "i.nxs"


def test_two_channels_two_nximages(tmp_path):
    w = NexusWriter(tmp_path / "two.nxs", config())
    w.open(
        start(),
        endpoint="tcp://x:1",
        channels=["threshold_1", "threshold_2"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=Codec.BSLZ4,
    )
    a, b = frame_data(1), frame_data(2)
    for ch, arr in enumerate((a, b)):
        frame = make_frame(0, arr, Codec.BSLZ4, channel=f"threshold_{ch + 1}")
        w.write(0, ch, frame.payload, frame)
    final = w.close(AcquisitionState.ABORTED, Counters(), None)
    with h5py.File(final, "r") as f:
        ev = f["/entry/measurement/event1"]
        np.testing.assert_array_equal(ev["image1/image_4d/intensity"][0, 0], a)
        np.testing.assert_array_equal(ev["image2/image_4d/intensity"][0, 0], b)
        assert ev["image2/frames/channel"][()] == b"threshold_2"
        assert b"threshold_2" in ev["image2/process/input/description"][()]
        assert ev["image2/frames/written"][0, 0] == 1 and ev["image2/frames/written"][0, 1] == 0


def test_position_out_of_range(tmp_path):
    w = NexusWriter(tmp_path / "r.nxs", config())
    w.open(
        start(),
        endpoint="tcp://x:1",
        channels=["c"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=Codec.BSLZ4,
    )
    frame = make_frame(0, frame_data(0), Codec.BSLZ4)
    with pytest.raises(IndexError):
        w.write(12, 0, frame.payload, frame)
    w.close(AcquisitionState.FAILED, Counters(), None)
