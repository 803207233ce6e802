"""Frames per chunk K: writer CPU per frame against what readers pay, in one process.

For K in 1, 2, 4, 8, 16 and detector-like bitshuffle-LZ4 frames (Poisson background plus a
bright central disk, 192x192 and 512x512 uint16), the file is written the way the data path
writes it (``NexusWriter.write`` per frame, payload straight off the "wire"), then read with
h5py + hdf5plugin the way viewers do:

- ``write us/frame``: ``time.process_time`` around the ``write()`` loop (flushes included),
  divided by the frames; the least of ``--repeat`` files (other processes only add);
- ``frame ms``: ``ds[m, k]``, mean over random positions, the file reopened (HDF5 chunk cache
  empty) and the page cache warm; ``cold ms``: the same after the file's pages were dropped
  (``posix_fadvise(DONTNEED)``), as a viewer opening an older file; ``step ms``: ``ds[m, k]``
  for k = 0, 1, 2, ... along rows (a viewer stepping through neighbours: the HDF5 chunk cache
  keeps a chunk that fits, 8 MiB by default since HDF5 2.0); ``step 1M``: the same with the
  1 MiB cache of HDF5 1.x (readers built on older libraries);
- ``row ms``: ``ds[m]`` (one scan row, as LiberTEM reads), mean over random rows.

Every read figure is the least of two passes; all but ``cold ms`` are CPU time
(``time.process_time``: the reading is decompression, and CPU time does not count the time other
processes took on a shared machine), ``cold ms`` is wall time (it waits for the disk).
Decompression runs on one thread (``OMP_NUM_THREADS=1``, as in the service).

Usage::

    python bench/kchunk.py              # the table, well under a minute
    python bench/kchunk.py --frames 8192 --reads 500 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before bitshuffle loads, as the service does

import h5py  # noqa: E402
import hdf5plugin  # noqa: E402, F401 - registers the filters for reading
import numpy as np  # noqa: E402
from stemdaq.config import AcquisitionConfig  # noqa: E402
from stemdaq.models import (  # noqa: E402
    AcquisitionState,
    Codec,
    Counters,
    DetectorInfo,
    Frame,
    SeriesStart,
)
from stemdaq.sim.compress import bslz4  # noqa: E402
from stemdaq.writer import NexusWriter  # noqa: E402

KS = (1, 2, 4, 8, 16)
SHAPES = ((192, 192), (512, 512))
N_K = 64  # scan row length (a multiple of every K)
POOL = 32  # distinct frames, cycled
DATA = "/entry/measurement/event1/image1/image_4d/intensity"


def detector_frames(shape: tuple[int, int], n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` uint16 frames: Poisson background (0.3 counts) and a central disk (~50 counts)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    disk = (yy - ny / 2) ** 2 + (xx - nx / 2) ** 2 < (ny / 10) ** 2
    lam = np.where(disk, 50.0, 0.3)
    return [rng.poisson(lam).astype(np.uint16) for _ in range(n)]


def write_file(
    path: Path, k: int, shape: tuple[int, int], payloads: list[bytes], n_frames: int
) -> tuple[float, int]:
    """Write ``n_frames`` frames with K = ``k``; return (CPU us per frame, file bytes)."""
    n_m = n_frames // N_K
    cfg = AcquisitionConfig(scan_shape=(n_m, N_K), frames_per_chunk=k, summary=False)
    frames = [
        Frame(
            series_id=1,
            frame_id=i,
            channel="threshold_1",
            shape=shape,
            dtype="uint16",
            codec=Codec.BSLZ4,
            payload=payloads[i % len(payloads)],
            start_time=i * 1e-4,
            stop_time=i * 1e-4 + 9e-5,
            real_time=9e-5,
        )
        for i in range(n_m * N_K)
    ]
    w = NexusWriter(path, cfg)
    w.open(
        SeriesStart(series_id=1, protocol="stream2", detector=DetectorInfo()),
        endpoint="tcp://127.0.0.1:31001",
        channels=["threshold_1"],
        frame_shape=shape,
        dtype="uint16",
        codec=Codec.BSLZ4,
        first=frames[0],
    )
    if w.chunk_shape != (1, k, *shape):
        raise RuntimeError(f"asked for K={k}, the writer chose {w.chunk_shape}")
    write = w.write
    t0 = time.process_time()
    for i, frame in enumerate(frames):
        write(i, 0, frame.payload, frame)
    cpu = time.process_time() - t0
    final = w.close(AcquisitionState.COMPLETED, Counters(), None)
    if final is None:
        raise RuntimeError("no file")
    return cpu / len(frames) * 1e6, final.stat().st_size


def drop_pages(path: Path) -> None:
    """Drop the file's pages from the page cache (the next read comes from the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_frames(path: Path, positions: np.ndarray, cold: bool) -> float:
    """Mean ms of ``ds[m, k]`` over ``positions`` (file reopened; pages dropped if ``cold``)."""
    if cold:
        drop_pages(path)
    clock = time.perf_counter if cold else time.process_time
    with h5py.File(path, "r") as f:
        ds = f[DATA]
        t0 = clock()
        for m, k in positions:
            ds[m, k]
        return (clock() - t0) / len(positions) * 1e3


def step_frames(path: Path, rows: np.ndarray, cache: int | None = None) -> float:
    """Mean ms of ``ds[m, k]`` for k = 0, 1, ... along ``rows`` (file reopened, pages warm);
    ``cache``: the HDF5 chunk cache in bytes (None: the library's default)."""
    with h5py.File(path, "r", rdcc_nbytes=cache) as f:
        ds = f[DATA]
        t0 = time.process_time()
        for m in rows:
            for k in range(N_K):
                ds[m, k]
        return (time.process_time() - t0) / (len(rows) * N_K) * 1e3


def read_rows(path: Path, rows: np.ndarray) -> float:
    """Mean ms of ``ds[m]`` (one scan row) over ``rows`` (file reopened, pages warm)."""
    with h5py.File(path, "r") as f:
        ds = f[DATA]
        t0 = time.process_time()
        for m in rows:
            ds[m]
        return (time.process_time() - t0) / len(rows) * 1e3


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3072, help="frames per file (192x192)")
    parser.add_argument("--reads", type=int, default=200, help="single-frame reads per file")
    parser.add_argument("--rows", type=int, default=8, help="row reads per file")
    parser.add_argument("--repeat", type=int, default=3, help="files written per case")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    header = (
        f"{'frames':>9} {'K':>3} {'write us/frame':>15} {'MB':>7} {'frame ms':>9} "
        f"{'cold ms':>8} {'step ms':>8} {'step 1M':>8} {'row ms':>7} {'row frames/s':>13}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="kchunk-") as tmp:
        for shape in SHAPES:
            pool = detector_frames(shape, POOL)
            payloads = [bslz4(a) for a in pool]
            n = args.frames if shape[0] <= 256 else args.frames * 2 // 3
            n = max(N_K, n // N_K * N_K)
            n_m = n // N_K
            pos = np.stack(
                [rng.integers(0, n_m, args.reads), rng.integers(0, N_K, args.reads)], axis=1
            )
            rows = rng.integers(0, n_m, args.rows)
            for k in KS:
                path = Path(tmp) / f"k{k}_{shape[0]}.nxs"
                us = float("inf")
                for _ in range(max(1, args.repeat)):
                    path.unlink(missing_ok=True)
                    cpu, size = write_file(path, k, shape, payloads, n)
                    us = min(us, cpu)
                passes = range(2)
                warm = min(read_frames(path, pos, cold=False) for _ in passes)
                cold = min(read_frames(path, pos, cold=True) for _ in passes)
                step = min(step_frames(path, rows[:2]) for _ in passes)
                step1 = min(step_frames(path, rows[:2], 1 << 20) for _ in passes)
                row = min(read_rows(path, rows) for _ in passes)
                label = f"{shape[0]}x{shape[1]}"
                print(
                    f"{label:>9} {k:>3} {us:>15.1f} {size / 1e6:>7.1f} {warm:>9.3f} "
                    f"{cold:>8.3f} {step:>8.3f} {step1:>8.3f} {row:>7.1f} {N_K / row * 1e3:>13.0f}",
                    flush=True,
                )
                path.unlink()


if __name__ == "__main__":
    main()
