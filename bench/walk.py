"""The framing check's block walk: compiled (``stemdaq._hotpath``) against Python.

For each benchmark case with detector bitshuffle-LZ4 frames, the sender's messages (the DECTRIS
layout, :mod:`sender`) are put in a ring of ``--ring`` messages (64: more than the caches hold
for large frames, as frames arriving from ZeroMQ are) and each payload's blocks are walked, as
the stream v2 fast path does per frame. CPU microseconds per frame (``time.process_time``)::

    python bench/walk.py
    python bench/walk.py --cold     # a ring of 256 MB: every walk starts from memory

A frame that comes from the network is not in the walking core's caches: ``--cold`` measures
that case (each size read is one memory latency unless the walk prefetches ahead, as the
compiled one does).
"""

from __future__ import annotations

import argparse
import struct
import time

import numpy as np
from cases import CASES
from sender import v2_messages
from stemdaq.receiver.blockwalk import COMPILED, walk, walk_python

BLOCK = 8192
BOUND = BLOCK + BLOCK // 255 + 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ring", type=int, default=64, help="distinct messages cycled through")
    ap.add_argument(
        "--cold", action="store_true", help="a ring of 256 MB (past the caches): cold walks"
    )
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args()
    print(f"compiled walk built: {COMPILED}; {'cold (256 MB ring)' if args.cold else 'warm'}")
    print(f"{'case':22} {'blocks':>6} {'python us':>10} {'compiled us':>12} {'ratio':>6}")
    for case in CASES:
        if case.codec != "bslz4" or case.protocol != "stream2":
            continue
        nbytes = case.shape[0] * case.shape[1] * np.dtype(case.dtype).itemsize
        _, templates, _, _ = v2_messages(case, 10)
        header = struct.pack(">QI", nbytes, BLOCK)
        ring = []
        size = len(templates[0])
        for i in range(max(args.ring, (256 << 20) // size if args.cold else 0)):
            msg = bytes(templates[i % len(templates)])
            ring.append((memoryview(bytearray(msg)), msg.index(header) + 12))
        n = -(-nbytes // BLOCK)
        ends = {walk_python(m, at, n, BOUND) for m, at in ring}
        if -1 in ends or {walk(m, at, n, BOUND) for m, at in ring} != ends:
            raise SystemExit(f"{case.name}: the walks disagree")
        us = {}
        for name, fn in (("python", walk_python), ("compiled", walk)):
            done, t0 = 0, time.process_time()
            while time.process_time() - t0 < args.seconds:
                for m, at in ring:
                    fn(m, at, n, BOUND)
                done += len(ring)
            us[name] = (time.process_time() - t0) / done * 1e6
        print(
            f"{case.name:22} {n:6d} {us['python']:10.2f} {us['compiled']:12.2f} "
            f"{us['python'] / us['compiled']:6.1f}"
        )


if __name__ == "__main__":
    main()
