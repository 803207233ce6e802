"""A crash (or an SWMR reader) between the bookkeeping write and the file's flush must never see
the written mask claim a frame whose chunk it cannot find.

HDF5's flush writes cached raw data (the mask's chunk) before the metadata (the chunk index
that makes a new data chunk findable), so one flush for both can leave, for a while or after a
crash, a mask that claims chunks the index does not have yet. The writer therefore flushes the
data first, then writes the bookkeeping, then flushes again. Seen before the fix: ``kill -9``
of ``stemdaq serve`` just after a reader saw the mask grow left a ``.partial`` whose frame 0
read back as zeros.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle filter for reading
import numpy as np
from writer_helpers import BOOK, DATA, frame_data

CRASH_IN_STORE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from writer_helpers import config, start, frame_data, make_frame
    from stemdaq.models import Codec
    from stemdaq.writer import NexusWriter
    from stemdaq.writer import chunking
    shape = (64, 64)  # 8 KiB of uint16: K-frame chunks apply
    w = NexusWriter(Path(sys.argv[1]), config(scan_shape=(2, 16), frames_per_chunk=8,
                    flush_frames=10_000, flush_seconds=600))
    w.open(start(), endpoint="tcp://x:1", channels=["threshold_1"], frame_shape=shape,
           dtype="uint16", codec=Codec.BSLZ4)
    def write(positions):
        for pos in positions:
            frame = make_frame(pos, frame_data(pos, shape), Codec.BSLZ4)
            w.write(pos, 0, frame.payload, frame)
    write(range(8))  # chunk 0 complete and written
    w.flush()  # the mask's chunk is now allocated: later mask values go straight to the file
    original = chunking.Bookkeeping.store
    def store_then_crash(self):
        original(self)
        # the file's flush writes cached raw data (the mask's chunk) before the metadata (the
        # data's chunk index): crash between the two, as kill -9 or a reader can land there
        for book in self._dsets:
            book["written"].id.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    chunking.Bookkeeping.store = store_then_crash
    write(range(8, 16))  # chunk 1: complete, written, not yet in the flushed chunk index
    w.flush()
""").format(here=str(Path(__file__).parent))


def test_a_crash_after_the_mask_write_leaves_only_frames_that_read_back(tmp_path: Path) -> None:
    final = tmp_path / "crash.nxs"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_IN_STORE, str(final)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = final.with_name(final.name + ".partial")
    with h5py.File(partial, "r", swmr=True, locking=False) as f:
        written = f[f"{BOOK}/written"][()].ravel()
        data = f[f"{DATA}/intensity"]
        assert written.sum() == 16, "the second store's mask reached the file"
        for pos in np.flatnonzero(written):
            m, k = divmod(int(pos), 16)
            got = data[m, k]
            assert np.array_equal(got, frame_data(int(pos), (64, 64))), (
                f"position {pos} is marked written but does not read back"
            )
    os.unlink(partial)
