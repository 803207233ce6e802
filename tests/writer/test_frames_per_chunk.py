"""K frames of a scan row per chunk (``frames_per_chunk``): real HDF5 files, read back with h5py.

Covers: bit-exact round trips (in order, reordered, with gaps, late frames after their chunk
was written, K not dividing n_k, several channels), the fallback to one frame per chunk, the
bookkeeping claiming only frames whose chunk is in the file, and a SWMR reader after a flush.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the filters for reading
import numpy as np
import pytest
from stemdaq.errors import DecodeError
from stemdaq.models import AcquisitionState, Codec, Counters, Frame
from stemdaq.writer import NexusWriter
from stemdaq.writer.chunking import frames_per_chunk
from writer_helpers import BOOK, DATA, bslz4, config, make_frame, start

INTENSITY = f"{DATA}/intensity"


def poisson(i: int, shape: tuple[int, int], dtype: str = "uint16", lam: float = 3.0) -> np.ndarray:
    """Detector-like counts (sparse, small), different per frame."""
    return np.random.default_rng(1000 + i).poisson(lam, size=shape).astype(dtype)


def open_writer(
    path: Path,
    k: int,
    scan: tuple[int, int],
    shape: tuple[int, int] = (192, 192),
    dtype: str = "uint16",
    *,
    codec: Codec = Codec.BSLZ4,
    channels: tuple[str, ...] = ("threshold_1",),
    first: Frame | None = None,
    **cfg: Any,
) -> NexusWriter:
    w = NexusWriter(path, config(scan_shape=scan, frames_per_chunk=k, **cfg))
    w.open(
        start(),
        endpoint="tcp://127.0.0.1:31001",
        channels=list(channels),
        frame_shape=shape,
        dtype=dtype,
        codec=codec,
        first=first,
    )
    return w


def put(w: NexusWriter, pos: int, arr: np.ndarray, channel: int = 0, codec=Codec.BSLZ4) -> int:
    frame = make_frame(pos, arr, codec, channel=w.channels[channel])
    return w.write(pos, channel, frame.payload, frame)


def close(w: NexusWriter) -> Path:
    final = w.close(AcquisitionState.COMPLETED, Counters(), None)
    assert final is not None
    return final


def check_file(
    path: Path, frames: dict[int, np.ndarray], scan: tuple[int, int], k: int, image: int = 1
) -> None:
    """Every frame bit-exact, every other position zero and not claimed; chunk shape K."""
    data = f"/entry/measurement/event1/image{image}/image_4d/intensity"
    book = f"/entry/measurement/event1/image{image}/frames"
    with h5py.File(path, "r") as f:
        ds = f[data]
        first = next(iter(frames.values()))
        assert ds.chunks == (1, k, *first.shape)
        full = ds[()]
        written = f[f"{book}/written"][()]
        frame_id = f[f"{book}/frame_id"][()]
        assert int(f[f"{book}/frames_written"][()]) == len(frames)
        n_k = scan[1]
        for pos in range(scan[0] * n_k):
            m, kk = divmod(pos, n_k)
            if pos in frames:
                np.testing.assert_array_equal(full[m, kk], frames[pos])
                np.testing.assert_array_equal(ds[m, kk], frames[pos])  # one frame, as H5Web
                assert written[m, kk] == 1 and frame_id[m, kk] == pos
            else:
                assert not full[m, kk].any(), f"gap at {pos} is not zero"
                assert written[m, kk] == 0 and frame_id[m, kk] == -1
        if frames:
            row = next(iter(frames)) // n_k
            np.testing.assert_array_equal(ds[row], full[row])  # a row, as LiberTEM


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4, 8, 3])
@pytest.mark.parametrize("order", ["in_order", "reordered", "gaps", "shuffled"])
def test_round_trip_192_uint16(tmp_path, k, order):
    scan = (3, 10)  # k = 3, 4, 8 do not divide 10: partial edge chunks
    n = scan[0] * scan[1]
    positions = list(range(n))
    if order == "reordered":  # adjacent swaps, some across chunk boundaries
        for i in (2, 3, 7, 11, 15, 23):
            positions[i], positions[i + 1] = positions[i + 1], positions[i]
    elif order == "gaps":
        positions = [p for p in positions if p not in (0, 5, 9, 12, 13, 14, 15, 16, 29)]
    elif order == "shuffled":
        np.random.default_rng(3).shuffle(positions)
    w = open_writer(tmp_path / "s.nxs", k, scan)
    assert w.chunk_shape == (1, k, 192, 192)
    frames: dict[int, np.ndarray] = {}
    for pos in positions:
        frames[pos] = poisson(pos, (192, 192))
        assert put(w, pos, frames[pos]) == len(bslz4(frames[pos]))
    assert w.frames_written + w.pending_frames == len(frames)
    check_file(close(w), frames, scan, k)
    assert w.frames_written == len(frames) and w.pending_frames == 0


def test_round_trip_1024_edge_chunk(tmp_path):
    scan, k = (2, 5), 4
    w = open_writer(tmp_path / "big.nxs", k, scan, (1024, 1024), "uint16")
    assert w.chunk_shape == (1, 4, 1024, 1024)  # 8 MiB: at the cap
    frames = {}
    for pos in (0, 1, 2, 3, 4, 6, 5, 8, 9):  # 7 never comes; 5 and 6 swapped
        frames[pos] = poisson(pos, (1024, 1024), "uint16", lam=50.0)
        put(w, pos, frames[pos])
    check_file(close(w), frames, scan, k)


def test_chunks_are_capped_at_8_mib(tmp_path):
    """4 MiB frames (1024x1024 uint32): K = 8 would make 32 MiB chunks that every single-frame
    read decompresses whole; two frames per chunk is the most."""
    scan = (1, 5)
    w = open_writer(tmp_path / "cap.nxs", 8, scan, (1024, 1024), "uint32")
    assert w.chunk_shape == (1, 2, 1024, 1024)
    frames = {pos: poisson(pos, (1024, 1024), "uint32", lam=50.0) for pos in range(5)}
    for pos, arr in frames.items():
        put(w, pos, arr)
    check_file(close(w), frames, scan, 2)


def test_k_larger_than_row_is_the_row(tmp_path):
    scan = (2, 3)
    w = open_writer(tmp_path / "r.nxs", 16, scan)
    assert w.chunk_shape == (1, 3, 192, 192)
    frames = {pos: poisson(pos, (192, 192)) for pos in range(6)}
    for pos, arr in frames.items():
        put(w, pos, arr)
    check_file(close(w), frames, scan, 3)


def test_two_channels_interleaved(tmp_path):
    scan, k = (2, 8), 4
    w = open_writer(tmp_path / "c.nxs", k, scan, channels=("threshold_1", "threshold_2"))
    frames: list[dict[int, np.ndarray]] = [{}, {}]
    for pos in range(16):
        for ch in (1, 0):
            if (ch, pos) in ((0, 5), (1, 10)):
                continue
            frames[ch][pos] = poisson(pos + 100 * ch, (192, 192))
            put(w, pos, frames[ch][pos], ch)
    final = close(w)
    check_file(final, frames[0], scan, k, image=1)
    check_file(final, frames[1], scan, k, image=2)


# -- bookkeeping and late frames -----------------------------------------------------------------


def test_written_claims_only_frames_whose_chunk_is_in_the_file(tmp_path):
    scan, k = (2, 8), 4
    w = open_writer(tmp_path / "b.nxs", k, scan)
    for pos in (0, 1, 2):
        put(w, pos, poisson(pos, (192, 192)))
    assert w.frames_written == 0 and w.pending_frames == 3  # waiting, not claimed
    put(w, 3, poisson(3, (192, 192)))
    assert w.frames_written == 4 and w.pending_frames == 0  # chunk complete: written
    w.flush()
    with h5py.File(w.tmp_path, "r", swmr=True) as f:
        assert f[f"{BOOK}/written"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    close(w)


def test_late_frame_after_its_chunk_was_written(tmp_path):
    scan, k = (2, 8), 4
    w = open_writer(tmp_path / "late.nxs", k, scan, flush_seconds=1.0)
    frames = {}
    for pos in (0, 1, 3, 4, 5, 6, 7, 8):  # 2 is late
        frames[pos] = poisson(pos, (192, 192))
        put(w, pos, frames[pos])
    time.sleep(1.1)
    assert w.maybe_flush()  # both chunks waited longer than flush_seconds: written, gaps zero
    assert w.pending_frames == 0 and w.frames_written == 8
    with h5py.File(w.tmp_path, "r", swmr=True) as f:
        assert f[f"{BOOK}/written"][0, :4].tolist() == [1, 1, 0, 1]
        assert not f[INTENSITY][0, 2].any()
        np.testing.assert_array_equal(f[INTENSITY][0, 3], frames[3])
    frames[2] = poisson(2, (192, 192))
    put(w, 2, frames[2])  # reads chunk 0 back, splices, writes it again
    assert w.frames_written == 9
    frames[9] = poisson(9, (192, 192))
    put(w, 9, frames[9])
    put(w, 2, frames[2])  # a duplicate of a frame already in the file: harmless
    check_file(close(w), frames, scan, k)


def test_waiting_chunk_written_when_next_chunk_starts_after_hold(tmp_path):
    scan, k = (1, 12), 4
    w = open_writer(tmp_path / "hold.nxs", k, scan, flush_seconds=60.0)
    frames = {pos: poisson(pos, (192, 192)) for pos in (0, 1, 2)}
    for pos, arr in frames.items():
        put(w, pos, arr)
    time.sleep(0.15)  # longer than chunking.HOLD_SECONDS
    frames[4] = poisson(4, (192, 192))
    put(w, 4, frames[4])  # a frame of the next chunk: chunk 0 goes with its gap
    assert w.frames_written == 3 and w.pending_frames == 1
    frames[3] = poisson(3, (192, 192))
    put(w, 3, frames[3])  # late: spliced into the stored chunk
    assert w.frames_written == 4
    check_file(close(w), frames, scan, k)


def test_failed_chunk_write_leaves_the_frame_unclaimed(tmp_path):
    scan, k = (1, 4), 4
    w = open_writer(tmp_path / "err.nxs", k, scan)
    for pos in (0, 1, 2):
        put(w, pos, poisson(pos, (192, 192)))

    class Refusing:
        def write_direct_chunk(self, *args: Any) -> None:
            raise OSError(28, "No space left on device")

    assert w._rows is not None
    real = w._rows._dsids
    w._rows._dsids = [Refusing()]
    with pytest.raises(OSError):
        put(w, 3, poisson(3, (192, 192)))
    assert w.frames_written == 0 and w.pending_frames == 0
    w._rows._dsids = real
    final = close(w)
    with h5py.File(final, "r") as f:
        assert int(f[f"{BOOK}/frames_written"][()]) == 0
        assert not f[f"{BOOK}/written"][()].any()


# -- which frames qualify -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "codec", "k"),
    [
        ((96, 96), "uint16", Codec.BSLZ4, 1),  # 18432 bytes: not whole 8 KiB blocks
        ((192, 192), "uint16", Codec.LZ4, 1),
        ((192, 192), "uint16", Codec.RAW, 1),  # compressed by stemdaq
        ((192, 192), "uint16", Codec.BSLZ4, 8),
        ((512, 512), "uint16", Codec.BSLZ4, 8),
        ((576, 576), "uint32", Codec.BSLZ4, 6),  # 1.3 MB frames: 6 fit in 8 MiB
    ],
)
def test_which_frames_share_a_chunk(tmp_path, shape, dtype, codec, k):
    scan = (2, 9)
    w = open_writer(tmp_path / "q.nxs", 8, scan, shape, dtype, codec=codec)
    assert w.chunk_shape == (1, k, *shape)
    frames = {}
    for pos in (0, 1, 2, 4, 3, 9, 17):
        frames[pos] = poisson(pos, shape, dtype)
        put(w, pos, frames[pos], codec=codec)
    check_file(close(w), frames, scan, k)


def test_first_frame_with_another_block_size_keeps_one_frame_per_chunk(tmp_path):
    arr = poisson(0, (192, 192))
    first = make_frame(0, arr, Codec.BSLZ4)
    first.payload = bslz4(arr, block_bytes=4096)
    w = open_writer(tmp_path / "bs.nxs", 4, (1, 8), first=first)
    assert w.chunk_shape == (1, 1, 192, 192)
    w.write(0, 0, first.payload, first)
    check_file(close(w), {0: arr}, (1, 8), 1)


def test_frames_in_another_framing_are_recompressed_into_the_chunk(tmp_path):
    scan, k = (1, 4), 4
    w = open_writer(tmp_path / "mixed.nxs", k, scan)
    frames = {}
    for pos, codec in enumerate((Codec.BSLZ4, Codec.LZ4, Codec.BSLZ4, Codec.RAW)):
        frames[pos] = poisson(pos, (192, 192))
        frame = make_frame(pos, frames[pos], codec)
        if pos == 2:  # another block size
            frame.payload = bslz4(frames[pos], block_bytes=2048)
        chunk = frame.payload if codec is Codec.BSLZ4 else w.prepare(frame)  # as the data path
        w.write(pos, 0, chunk, frame)
    check_file(close(w), frames, scan, k)


@pytest.mark.parametrize("validate", [True, False])
def test_a_broken_payload_is_the_frame_s_fault(tmp_path, validate):
    w = NexusWriter(
        tmp_path / "bad.nxs",
        config(scan_shape=(1, 4), frames_per_chunk=4),
        validate_framing=validate,
    )
    w.open(
        start(),
        endpoint="x",
        channels=["threshold_1"],
        frame_shape=(192, 192),
        dtype="uint16",
        codec=Codec.BSLZ4,
    )
    frame = make_frame(0, poisson(0, (192, 192)), Codec.BSLZ4)
    frame.payload = frame.payload[:7]
    with pytest.raises(DecodeError):
        w.write(0, 0, frame.payload, frame)
    assert w.pending_frames == 0
    close(w)


def test_frames_per_chunk_reasons():
    assert frames_per_chunk(8, 10, Codec.BSLZ4, 192 * 192 * 2) == (8, "")
    assert frames_per_chunk(1, 10, Codec.BSLZ4, 192 * 192 * 2) == (1, "")
    k, why = frames_per_chunk(8, 10, Codec.BSLZ4, 96 * 96 * 2)
    assert k == 1 and "8192-byte blocks" in why
    k, why = frames_per_chunk(8, 1, Codec.BSLZ4, 192 * 192 * 2)
    assert k == 1 and why


# -- SWMR --------------------------------------------------------------------------------------

READER = textwrap.dedent("""
    import json, sys, h5py, hdf5plugin
    with h5py.File(sys.argv[1], "r", swmr=True) as f:
        ds = f["{data}"]
        n = int(f["{book}/frames_written"][()])
        written = f["{book}/written"][()]
        sums = [int(ds[m, k].astype("int64").sum()) for m, k in zip(*written.nonzero())]
        print(json.dumps({{"n": n, "written": written.tolist(), "sums": sums}}))
""").format(data=INTENSITY, book=BOOK)


def read_swmr(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", READER, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_swmr_reader_sees_frames_after_flush(tmp_path):
    scan, k = (2, 8), 4
    w = open_writer(tmp_path / "live.nxs", k, scan, flush_seconds=1.0)
    frames = {pos: poisson(pos, (192, 192)) for pos in range(7)}  # chunk 1 waits for 7
    for pos, arr in frames.items():
        put(w, pos, arr)
    w.flush()
    seen = read_swmr(w.tmp_path)
    assert seen["n"] == 4 and seen["written"][0] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert seen["sums"] == [int(frames[p].sum()) for p in range(4)]
    time.sleep(1.1)
    assert w.maybe_flush()  # chunk 1 waited longer than flush_seconds: in the file, gap zero
    seen = read_swmr(w.tmp_path)
    assert seen["n"] == 7 and seen["written"][0] == [1] * 7 + [0]
    assert seen["sums"] == [int(frames[p].sum()) for p in range(7)]
    close(w)
