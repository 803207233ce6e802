"""The benchmark's own receivers, each run as a fresh process by the driver.

- ``transport``: a bare PULL loop, ``recv_multipart(copy=False)`` and discard (the transport
  limit);
- ``naive``: receive, decode (cbor2 / json), decompress, ``dset[i] = frame`` through the
  bitshuffle-LZ4 filter (what a hand-written receiver does);
- ``minimal``, ``minimal-scan`` and ``minimal-k8``: the direct-chunk floor (:mod:`minimal`).

Every receiver connects PULL with ``RCVHWM`` 1000 (stemdaq's default ``queue_size``), reads
the series start, images and end, and writes a JSON result: frames received or written and
``t_end`` (``time.time()`` after the last message, or after the file was closed).

Usage (by the driver)::

    python bench/receivers.py KIND --endpoint tcp://127.0.0.1:PORT --case NAME --frames N \
        --out FILE.h5 --result RESULT.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # bitshuffle's OpenMP threads: one, as stemdaq

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import zmq  # noqa: E402
from cases import BENCH_DATASET, Case, by_name  # noqa: E402
from minimal import run_minimal, run_minimal_k8, run_minimal_scan  # noqa: E402

RCVHWM = 1000
KINDS = ("transport", "naive", "minimal", "minimal-scan", "minimal-k8")


def run_transport(sock: zmq.Socket, case: Case, n: int, path: str) -> int:
    """Receive start, n images and end without looking at them; returns images received."""
    del case, path
    got = 0
    for _ in range(n + 2):
        try:
            sock.recv_multipart(copy=False)
        except zmq.Again:  # RCVTIMEO: the sender stopped early
            break
        got += 1
    return max(0, got - 2)


def run_naive(sock: zmq.Socket, case: Case, n: int, path: str) -> int:
    """Decode, decompress, ``dset[i] = frame`` through the filter; returns frames written."""
    import bitshuffle
    import cbor2
    import h5py
    import hdf5plugin

    ny, nx = case.shape
    dtype = np.dtype(case.dtype)
    block = 8192 // dtype.itemsize
    written = 0
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(
            BENCH_DATASET,
            (n, ny, nx),
            dtype=dtype,
            chunks=(1, ny, nx),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
        while True:
            parts = sock.recv_multipart()
            if case.protocol == "stream2":
                msg = cbor2.loads(parts[0])
                if msg["type"] == "end":
                    break
                if msg["type"] != "image":
                    continue
                typed = msg["data"]["threshold_1"].value[1].value
                i = msg["image_id"]
                if isinstance(typed, cbor2.CBORTag):
                    blob = np.frombuffer(typed.value[2], np.uint8)[12:]
                    frame = bitshuffle.decompress_lz4(blob, (ny, nx), dtype, block)
                else:
                    frame = np.frombuffer(typed, dtype).reshape(ny, nx)
            else:
                head = json.loads(parts[0])
                if head.get("htype") == "dseries_end-1.0":
                    break
                if head.get("htype") != "dimage-1.0":
                    continue
                i = head["frame"]
                blob = np.frombuffer(parts[2], np.uint8)[12:]
                frame = bitshuffle.decompress_lz4(blob, (ny, nx), dtype, block)
            dset[i] = frame
            written += 1
    return written


RUNNERS = {
    "transport": run_transport,
    "naive": run_naive,
    "minimal": run_minimal,
    "minimal-scan": run_minimal_scan,
    "minimal-k8": run_minimal_k8,
}


def main(argv: list[str] | None = None) -> int:
    """Connect, run one receiver until the series ends, write the result JSON."""
    parser = argparse.ArgumentParser(description="One benchmark receiver (run by the driver).")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--case", required=True, help="case name, as in cases.py")
    parser.add_argument("--frames", type=int, required=True, help="images the sender sends")
    parser.add_argument("--out", default="", help="HDF5 file to write")
    parser.add_argument("--result", required=True, help="JSON file for the result")
    args = parser.parse_args(argv)
    case = by_name(args.case)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.RCVTIMEO, 60_000)  # a receiver never hangs forever
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    frames = RUNNERS[args.kind](sock, case, args.frames, args.out)
    t_end = time.time()
    with open(args.result, "w") as fh:
        json.dump({"frames": frames, "t_end": t_end}, fh)
    sock.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
