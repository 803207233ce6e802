"""Readable while written (a second process with ``swmr=True``) and crash safety (kill -9)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the filters for reading
import numpy as np
import pytest
from stemdaq.models import AcquisitionState, Codec, Counters
from stemdaq.writer import NexusWriter, clear_status_flags, inspect_file
from writer_helpers import (
    BOOK,
    DATA,
    config,
    frame_data,
    killed_writer_partial,
    make_frame,
    start,
)

HERE = Path(__file__).parent

READER = textwrap.dedent("""
    import sys, time, h5py, hdf5plugin
    path, target = sys.argv[1], int(sys.argv[2])
    with h5py.File(path, "r", swmr=True) as f:
        ds = f["{book}/frames_written"]
        deadline = time.monotonic() + 30
        last = -1
        while time.monotonic() < deadline:
            ds.refresh()
            n = int(ds[()])
            if n != last:
                print(n, flush=True)
                last = n
            if n >= target:
                break
            time.sleep(0.005)
""").format(book=BOOK)


def test_second_process_sees_frames_written_grow(tmp_path):
    cfg = config(scan_shape=(4, 5), flush_frames=2)
    w = NexusWriter(tmp_path / "live.nxs", cfg)
    w.open(
        start(),
        endpoint="tcp://x:1",
        channels=["threshold_1"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=Codec.BSLZ4,
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(w.tmp_path), "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # let the reader open the file
        for pos in range(20):
            frame = make_frame(pos, frame_data(pos), Codec.BSLZ4)
            w.write(pos, 0, frame.payload, frame)
            time.sleep(0.03)
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
    seen = [int(x) for x in out.split()]
    assert reader.returncode == 0, err
    assert seen[-1] == 20 and seen == sorted(seen)
    assert len([n for n in seen if 0 < n < 20]) >= 3, (
        seen
    )  # it saw the count grow, not just the end
    w.close(AcquisitionState.COMPLETED, Counters(), None)


def test_maybe_flush_flushes_after_flush_seconds(tmp_path):
    w = NexusWriter(tmp_path / "t.nxs", config(flush_frames=1000, flush_seconds=0.05))
    w.open(
        start(),
        endpoint="tcp://x:1",
        channels=["c"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=Codec.BSLZ4,
    )
    frame = make_frame(0, frame_data(0), Codec.BSLZ4)
    w.write(0, 0, frame.payload, frame)
    time.sleep(0.06)
    frame = make_frame(1, frame_data(1), Codec.BSLZ4)
    w.write(1, 0, frame.payload, frame)  # the clock is checked in write() too
    assert w.maybe_flush() is False  # nothing new since the flush in write()
    with h5py.File(w.tmp_path, "r", swmr=True) as f:
        assert f[f"{BOOK}/frames_written"][()] == 2
    frame = make_frame(2, frame_data(2), Codec.BSLZ4)
    w.write(2, 0, frame.payload, frame)
    time.sleep(0.06)
    assert w.maybe_flush() is True
    w.close(AcquisitionState.COMPLETED, Counters(), None)


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9")
def test_kill_9_leaves_a_readable_partial_file(tmp_path):
    final = tmp_path / "crash.nxs"
    partial = killed_writer_partial(final, Codec.RAW)

    # a SWMR reader opens it as it is, with every flushed frame
    with h5py.File(partial, "r", swmr=True) as f:
        assert f[f"{BOOK}/frames_written"][()] == 10
        written = f[f"{BOOK}/written"][()].ravel()
        assert written[:10].all() and not written[10:].any()
        data = f[f"{DATA}/intensity"]
        for pos in range(10):
            np.testing.assert_array_equal(data[pos // 5, pos % 5], frame_data(pos))
    report = inspect_file(partial)
    assert report.ok and report.partial and report.images[0].frames_written == 10

    # a plain open needs the status flags cleared (h5clear -s, or our equivalent)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(partial, "r")
    assert clear_status_flags(partial) is True
    with h5py.File(partial, "r") as f:
        assert f[f"{BOOK}/frames_written"][()] == 10
    assert clear_status_flags(partial) is False


def test_clear_status_flags_rejects_non_hdf5(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"not hdf5" * 10)
    with pytest.raises(ValueError, match="not an HDF5"):
        clear_status_flags(p)
