"""The live view's per-frame cost, part by part, and numpy against numba for the reduction.

One core, ``OMP_NUM_THREADS=1`` (as the service), synthetic diffraction frames from the
simulator (``stemdaq.sim.frames``), bitshuffle-LZ4 as the detector sends them, batches of 32.
Rows (CPU microseconds per frame, ``time.thread_time``):

========================  ====================================================================
decode, one call/batch    the batch's blocks behind one header, one ``dectris`` call
decode, one call/frame    ``dectris.compression.decompress`` per frame
exact sums                ``Sums.add_batch``: summed pattern and total per position, exact
to float32                the batch converted for the matrix product
reduce numpy              (B x pixels) @ (pixels x 5): total, bf, adf, two moments
reduce numba              the same sums in one loop over the integer frames (if importable)
bin to 32x32              the copy kept to recompute maps after a geometry change
whole path                ``SummaryAccumulator`` with no budget (cpu_share 1), per frame
========================  ====================================================================

Usage::

    python bench/live_kernels.py                 # 192x192 and 512x512 uint16
    python bench/live_kernels.py --shape 96x96 --frames 2048
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy loads BLAS, as the service

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from stemdaq.live import kernels
from stemdaq.live.geometry import DetectorsRequest, resolve
from stemdaq.models import Codec, Frame
from stemdaq.sim.compress import bslz4
from stemdaq.sim.frames import FrameGenerator
from stemdaq.writer.summary import BATCH, SummaryAccumulator
from stemdaq.writer.summary_decode import Sums, batch_decoder, make_decoder


def per_frame(fn: Callable[[], Any], frames: int, repeat: int = 5) -> float:
    """CPU microseconds per frame of ``fn`` (which handles ``frames`` frames), best of runs."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best / frames * 1e6


def numba_reduce() -> Callable[..., None] | None:
    """The reduction as a numba kernel, or None when numba is not installed."""
    try:
        import numba  # type: ignore[import-untyped]
    except ImportError:
        return None

    @numba.njit(cache=False, fastmath=True)  # type: ignore[misc]
    def reduce(frames: Any, bf: Any, adf: Any, cx: float, cy: float, out: Any) -> None:
        b, ny, nx = frames.shape
        for i in range(b):
            t = s1 = s2 = sx = sy = np.float32(0.0)
            for y in range(ny):
                row = np.float32(0.0)
                for x in range(nx):
                    v = np.float32(frames[i, y, x])
                    row += v
                    s1 += v * bf[y, x]
                    s2 += v * adf[y, x]
                    sx += v * (np.float32(x) - cx)
                t += row
                sy += row * (np.float32(y) - cy)
            out[i, 0], out[i, 1], out[i, 2], out[i, 3], out[i, 4] = t, s1, s2, sx, sy

    return reduce  # type: ignore[no-any-return]


def bench(shape: tuple[int, int], n_frames: int) -> list[tuple[str, float]]:
    """Rows of (part, us per frame) for frames of ``shape``."""
    gen = FrameGenerator(shape, "uint16", (64, 64), seed=1)
    arrs = [gen.frame(i) for i in range(BATCH)]
    payloads = [bslz4(a) for a in arrs]
    batch = np.stack(arrs)
    dt = np.dtype("uint16")
    one = make_decoder(Codec.BSLZ4, shape, dt)
    many = batch_decoder(Codec.BSLZ4, shape, dt)
    det = resolve(shape, DetectorsRequest())
    weights = kernels.weight_matrix(shape, det)
    kernels.single_thread_blas()
    buf = batch.astype(np.float32)
    binner = kernels.Binner(shape, 32)
    sums = Sums(BATCH, shape, dt)
    pos = np.arange(BATCH)
    rows: list[tuple[str, float]] = []
    if many is not None:
        rows.append(("decode, one call/batch", per_frame(lambda: many(payloads), BATCH)))
    rows.append(("decode, one call/frame", per_frame(lambda: [one(p) for p in payloads], BATCH)))
    rows.append(("exact sums", per_frame(lambda: sums.add_batch(pos, batch), BATCH)))
    rows.append(("to float32", per_frame(lambda: np.copyto(buf, batch), BATCH)))
    rows.append(
        ("reduce numpy", per_frame(lambda: kernels.reduce(buf.reshape(BATCH, -1), weights), BATCH))
    )
    nb = numba_reduce()
    if nb is not None:
        out = np.zeros((BATCH, 5))
        bf = np.ascontiguousarray(weights[:, 1].reshape(shape))
        adf = np.ascontiguousarray(weights[:, 2].reshape(shape))
        cx, cy = (np.float32(v) for v in det.center)
        rows.append(("reduce numba", per_frame(lambda: nb(batch, bf, adf, cx, cy, out), BATCH)))
        ref = kernels.reduce(buf.reshape(BATCH, -1), weights)
        assert np.allclose(out, ref, rtol=1e-4), "numba and numpy disagree"
    rows.append(("bin to 32x32", per_frame(lambda: binner.bin(buf), BATCH)))

    frames = [
        Frame(1, i, "threshold_1", shape, "uint16", Codec.BSLZ4, payloads[i % BATCH])
        for i in range(n_frames)
    ]
    acc = SummaryAccumulator((n_frames // 64, 64), shape, "uint16", cpu_share=1.0)
    for i, f in enumerate(frames):
        while not acc.offer(i, f):
            acc.skipped -= 1
            acc.offered -= 1
            time.sleep(0.001)
    acc.finish()
    rows.append(("whole path", acc.cpu_seconds / max(1, acc.included) * 1e6))
    return rows


def main() -> None:
    """Print one table per frame shape."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shape", action="append", help="ny x nx (repeatable)")
    parser.add_argument("--frames", type=int, default=1024, help="frames for the whole path")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shape or ["192x192", "512x512"]]
    for shape in shapes:
        print(f"\n{shape[0]}x{shape[1]} uint16, bitshuffle-LZ4, batches of {BATCH}")
        print(f"{'part':26s} {'us/frame':>9s}")
        for name, us in bench(shape, args.frames):  # type: ignore[arg-type]
            print(f"{name:26s} {us:9.1f}")


if __name__ == "__main__":
    main()
