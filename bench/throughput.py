"""Throughput benchmark: stemdaq against the transport limit and a naive writer, same run.

For each case a sender process replays pre-encoded DECTRIS stream messages as fast as ZeroMQ
allows (templates with the image id patched in place, so the sender is never the limit), into:

(a) transport: a bare PULL loop that receives (``copy=False``) and discards;
(b) naive:     receive + decode + ``dset[i] = frame`` through the HDF5 filter (what people write);
(c) stemdaq:   stemdaq's own Acquisition (receiver thread -> queue -> writer), until the file is
               closed.

Each receiver runs in a fresh process (peak RSS is its own). The table reports frames/s, MB/s
(uncompressed and on the wire), frames lost, peak RSS, and the ratios stemdaq/transport and
stemdaq/naive. ``--quick`` finishes in under a minute; ``--soak`` runs the 1,000,000-frame scan
and samples RSS; ``--status`` also measures GET /api/v1/status latency on a running service.

Usage::

    python bench/throughput.py --quick
    python bench/throughput.py --repeat 3          # medians of 3 runs
    python bench/throughput.py --soak              # 1000x1000 scan of 96x96 frames
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import zmq  # noqa: E402

# the sender plays the detector: it frames bslz4 payloads as the simulated DCU does
from stemdaq.sim.compress import bslz4  # noqa: E402

MAGIC = b"\xd9\xd9\xf7"
PLACEHOLDER = 0xFFFFFFF0  # encoded as 1a fffffff0: a fixed-width slot for the image id


@dataclass(frozen=True)
class Case:
    """One benchmark case."""

    name: str
    shape: tuple[int, int]
    dtype: str
    codec: str  # bslz4 | raw
    frames: int
    quick_frames: int
    protocol: str = "stream2"

    @property
    def frame_nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * np.dtype(self.dtype).itemsize


CASES = [
    Case("192x192 u16 bslz4", (192, 192), "uint16", "bslz4", 200_000, 40_000),
    Case("512x512 u16 bslz4", (512, 512), "uint16", "bslz4", 40_000, 8_000),
    Case("256x256 u16 raw", (256, 256), "uint16", "raw", 40_000, 8_000),
    Case("1024x1024 u32 bslz4", (1024, 1024), "uint32", "bslz4", 2_000, 400),
    Case("192x192 u16 bslz4 v1", (192, 192), "uint16", "bslz4", 100_000, 20_000, "stream1"),
]
SOAK = Case("soak 96x96 u16 bslz4", (96, 96), "uint16", "bslz4", 1_000_000, 100_000)


# -- message templates ------------------------------------------------------------------------


def synthetic_frames(case: Case, n: int = 16) -> list[np.ndarray]:
    """A few sparse, detector-like frames (a bright disk, Poisson background)."""
    rng = np.random.default_rng(1)
    ny, nx = case.shape
    yy, xx = np.mgrid[:ny, :nx]
    frames = []
    for i in range(n):
        disk = ((yy - ny / 2 - i % 3) ** 2 + (xx - nx / 2) ** 2) < (min(ny, nx) / 8) ** 2
        lam = 0.05 + 20.0 * disk
        frames.append(rng.poisson(lam).astype(case.dtype))
    return frames


def v2_templates(case: Case, series: int = 7) -> tuple[bytes, list[bytearray], list[int], bytes]:
    """Start message, image templates (with the id slot offset) and end message, stream v2."""
    import cbor2

    def dumps(obj: dict) -> bytes:
        return MAGIC + cbor2.dumps(obj)

    dtype_tag = {"uint8": 64, "uint16": 69, "uint32": 70}[case.dtype]
    ny, nx = case.shape
    start = dumps(
        {
            "type": "start",
            "series_id": series,
            "series_unique_id": f"bench-{series}",
            "number_of_images": case.frames,
            "image_size_x": nx,
            "image_size_y": ny,
            "image_dtype": case.dtype,
            "channels": ["threshold_1"],
            "detector_description": "bench",
            "pixel_size_x": 55e-6,
            "pixel_size_y": 55e-6,
            "frame_time": 1e-4,
            "count_time": 1e-4,
        }
    )
    templates, offsets = [], []
    slot = b"\x1a" + struct.pack(">I", PLACEHOLDER)
    for arr in synthetic_frames(case):
        payload = bslz4(arr) if case.codec == "bslz4" else arr.tobytes()
        typed = (
            cbor2.CBORTag(56500, ["bslz4", arr.itemsize, payload])
            if case.codec == "bslz4"
            else payload
        )
        msg = dumps(
            {
                "type": "image",
                "series_id": series,
                "series_unique_id": f"bench-{series}",
                "image_id": PLACEHOLDER,
                "real_time": [100, 50_000_000],
                "data": {
                    "threshold_1": cbor2.CBORTag(40, [[ny, nx], cbor2.CBORTag(dtype_tag, typed)])
                },
            }
        )
        templates.append(bytearray(msg))
        offsets.append(msg.index(slot) + 1)
    end = dumps({"type": "end", "series_id": series, "series_unique_id": f"bench-{series}"})
    return start, templates, offsets, end


def v1_parts(
    case: Case, series: int = 7
) -> tuple[list[bytes], list[tuple[bytes, bytes, str]], bytes]:
    """Header parts, (dimage_d, blob, md5) per template frame, end, stream v1."""
    import hashlib
    import json

    ny, nx = case.shape
    header = [
        json.dumps({"htype": "dheader-1.0", "series": series, "header_detail": "basic"}).encode(),
        json.dumps(
            {
                "nimages": case.frames,
                "ntrigger": 1,
                "trigger_mode": "ints",
                "x_pixels_in_detector": nx,
                "y_pixels_in_detector": ny,
                "bit_depth_image": 8 * np.dtype(case.dtype).itemsize,
                "compression": "bslz4",
                "description": "bench",
            }
        ).encode(),
    ]
    frames = []
    bits = 8 * np.dtype(case.dtype).itemsize
    for arr in synthetic_frames(case):
        blob = bslz4(arr)
        d = json.dumps(
            {
                "htype": "dimage_d-1.0",
                "shape": [nx, ny],
                "type": case.dtype,
                "encoding": f"bs{bits}-lz4<",
                "size": len(blob),
            }
        ).encode()
        frames.append((d, blob, hashlib.md5(blob).hexdigest()))
    end = json.dumps({"htype": "dseries_end-1.0", "series": series}).encode()
    return header, frames, end


# -- sender -----------------------------------------------------------------------------------


def sender(endpoint: str, case: Case, n: int, ready: mp.Event) -> None:
    """Bind PUSH and replay n images as fast as ZeroMQ takes them."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.LINGER, -1)
    sock.bind(endpoint)
    ready.set()
    if case.protocol == "stream2":
        start, templates, offsets, end = v2_templates(case)
        sock.send(start)
        k = len(templates)
        pack = struct.Struct(">I").pack_into
        for i in range(n):
            msg = templates[i % k]
            pack(msg, offsets[i % k], i)
            sock.send(msg)  # copies: the template is patched again next round
        sock.send(end)
    else:
        import json

        header, frames, end = v1_parts(case)
        sock.send_multipart(header)
        k = len(frames)
        cfg = b'{"htype":"dconfig-1.0","start_time":0,"stop_time":100000,"real_time":100000}'
        for i in range(n):
            d, blob, md5 = frames[i % k]
            head = json.dumps(
                {"htype": "dimage-1.0", "series": 7, "frame": i, "hash": md5}
            ).encode()
            sock.send_multipart([head, d, blob, cfg], copy=False)
        sock.send(end)
    sock.close()  # linger -1: returns once everything is handed to the peer
    ctx.term()


# -- receivers (each in its own process) --------------------------------------------------------


def run_transport(endpoint: str, case: Case, n: int, out: mp.Queue) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.connect(endpoint)
    got, nbytes, t0 = 0, 0, None
    total = n + 2  # start + images + end
    for _ in range(total):
        parts = sock.recv_multipart(copy=False)
        if t0 is None:
            t0 = time.perf_counter()
        nbytes += sum(len(p.buffer) for p in parts)
        got += 1
    dt = time.perf_counter() - t0
    out.put(
        {
            "frames": got - 2,
            "seconds": dt,
            "wire_bytes": nbytes,
            "lost": total - got,
            "rss_mb": _rss_mb(),
        }
    )
    sock.close()
    ctx.term()


def run_naive(endpoint: str, case: Case, n: int, out: mp.Queue, path: str) -> None:
    """What a hand-written receiver does: decode, decompress, dset[i] = frame through the filter."""
    import json

    import bitshuffle
    import cbor2
    import h5py
    import hdf5plugin

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.connect(endpoint)
    ny, nx = case.shape
    itemsize = np.dtype(case.dtype).itemsize
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(
            "data",
            (n, ny, nx),
            dtype=case.dtype,
            chunks=(1, ny, nx),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
        written, t0 = 0, None
        while True:
            parts = sock.recv_multipart()
            if t0 is None:
                t0 = time.perf_counter()
            if case.protocol == "stream2":
                msg = cbor2.loads(parts[0])
                if msg["type"] == "end":
                    break
                if msg["type"] != "image":
                    continue
                typed = msg["data"]["threshold_1"].value[1].value
                i = msg["image_id"]
                if isinstance(typed, cbor2.CBORTag):
                    raw = bitshuffle.decompress_lz4(
                        np.frombuffer(typed.value[2], np.uint8)[12:],
                        (ny, nx),
                        np.dtype(case.dtype),
                        8192 // itemsize,
                    )
                else:
                    raw = np.frombuffer(typed, case.dtype).reshape(ny, nx)
            else:
                head = json.loads(parts[0])
                if head.get("htype") == "dseries_end-1.0":
                    break
                if head.get("htype") != "dimage-1.0":
                    continue
                i = head["frame"]
                raw = bitshuffle.decompress_lz4(
                    np.frombuffer(parts[2], np.uint8)[12:],
                    (ny, nx),
                    np.dtype(case.dtype),
                    8192 // itemsize,
                )
            dset[i] = raw
            written += 1
        dt = time.perf_counter() - t0
    out.put({"frames": written, "seconds": dt, "lost": n - written, "rss_mb": _rss_mb()})
    sock.close()
    ctx.term()


def run_stemdaq(endpoint: str, case: Case, n: int, out: mp.Queue, path: str) -> None:
    """stemdaq's Acquisition, from the first message to the closed file."""
    from stemdaq.acquisition import Acquisition
    from stemdaq.config import AcquisitionConfig

    side = int(np.ceil(np.sqrt(n)))
    while n % side:
        side -= 1
    config = AcquisitionConfig(
        stream_endpoint=endpoint,
        scan_shape=(n // side, side),
        end_timeout=30,
        start_timeout=60,
        summary=True,
    )
    acq = Acquisition(config, Path(path), acq_id="bench")
    acq.start()
    t_first = None
    peak = 0.0
    timeline: list[tuple[int, float]] = []  # (frames written, current RSS MB), for the soak
    next_sample = 0.0
    while not acq.wait(0.05):
        if t_first is None and acq.info().counters.frames_received > 0:
            t_first = time.perf_counter()
        peak = max(peak, _rss_mb())
        if time.perf_counter() >= next_sample:
            timeline.append((acq.info().frames_written, _rss_now_mb()))
            next_sample = time.perf_counter() + 2.0
    t_end = time.perf_counter()
    info = acq.info()
    acq.close()
    dt = t_end - (t_first or t_end)
    out.put(
        {
            "frames": info.frames_written,
            "seconds": dt,
            "lost": n - info.frames_written,
            "rss_mb": max(peak, _rss_mb()),
            "state": info.state.value,
            "bytes_written": info.counters.bytes_written,
            "exact": _verify(case, path, n),
            "timeline": timeline,
        }
    )


def _verify(case: Case, path: str, n: int, samples: int = 32) -> bool:
    """Bit-exact check of a sample of frames read back through HDF5."""
    import h5py
    import hdf5plugin  # noqa: F401

    frames = synthetic_frames(case)
    with h5py.File(path, "r") as f:
        dset = f["/entry/measurement/event1/image1/image_4d/intensity"]
        flat = dset.shape[1]
        for i in np.linspace(0, n - 1, samples).astype(int):
            if not np.array_equal(dset[i // flat, i % flat], frames[i % len(frames)]):
                return False
    return True


def _rss_now_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_service(case: Case, n: int, tmp: Path) -> dict:
    """``stemdaq serve`` ingests at full rate while we poll GET /api/v1/status from outside."""
    import subprocess

    import httpx

    with SocketPort() as port, SocketPort() as api_port:
        endpoint = f"tcp://127.0.0.1:{port}"
    side = int(np.ceil(np.sqrt(n)))
    while n % side:
        side -= 1
    env = {
        **os.environ,
        "STEMDAQ_ACQUISITION__STREAM_ENDPOINT": endpoint,
        "STEMDAQ_ACQUISITION__SCAN_SHAPE": f"[{n // side}, {side}]",
        "STEMDAQ_ACQUISITION__END_TIMEOUT": "30",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stemdaq.cli",
            "serve",
            "--port",
            str(api_port),
            "--data-dir",
            str(tmp / "service"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{api_port}"
    latencies: list[float] = []
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(100):
                try:
                    http.get("/healthz").raise_for_status()
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            acq = http.post("/api/v1/acquisitions", json={}).json()
            ctx = mp.get_context("fork")
            ready = ctx.Event()
            send = ctx.Process(target=sender, args=(endpoint, case, n, ready), daemon=True)
            send.start()
            state = "armed"
            while state not in ("completed", "aborted", "failed"):
                t0 = time.perf_counter()
                status = http.get("/api/v1/status").json()
                if status.get("state") == "acquiring":
                    latencies.append(time.perf_counter() - t0)
                state = http.get(f"/api/v1/acquisitions/{acq['id']}").json()["state"]
                time.sleep(0.01)
            final = http.get(f"/api/v1/acquisitions/{acq['id']}").json()
            send.join(30)
    finally:
        server.terminate()
        server.wait(30)
    lat = np.array(latencies) * 1e3
    return {
        "requests": len(lat),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "max_ms": float(lat.max()) if len(lat) else float("nan"),
        "frames_written": final["frames_written"],
        "frames": n,
        "state": final["state"],
    }


# -- driver -------------------------------------------------------------------------------------


def measure(kind: str, case: Case, n: int, tmp: Path) -> dict:
    ctx = mp.get_context("fork")
    with SocketPort() as port:
        endpoint = f"tcp://127.0.0.1:{port}"
    out: mp.Queue = ctx.Queue()
    ready = ctx.Event()
    send = ctx.Process(target=sender, args=(endpoint, case, n, ready), daemon=True)
    send.start()
    ready.wait(30)
    path = str(tmp / f"{kind}-{case.name.replace(' ', '_')}.h5")
    args = {
        "transport": (endpoint, case, n, out),
        "naive": (endpoint, case, n, out, path),
        "stemdaq": (endpoint, case, n, out, path),
    }[kind]
    target = {"transport": run_transport, "naive": run_naive, "stemdaq": run_stemdaq}[kind]
    recv = ctx.Process(target=target, args=args)
    recv.start()
    result = out.get(timeout=600)
    recv.join(60)
    send.join(60)
    if os.path.exists(path):
        result["file_gb"] = os.path.getsize(path) / 1e9
        os.remove(path)
    return result


class SocketPort:
    """A free TCP port on 127.0.0.1 (bound and released)."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))
        return self._s.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self._s.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small frame counts, under a minute")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument("--soak", action="store_true", help="1,000,000-frame scan of 96x96 frames")
    parser.add_argument("--cases", default="", help="comma-separated substrings of case names")
    parser.add_argument("--no-status", action="store_true", help="skip the status-latency run")
    args = parser.parse_args(argv)

    cases = (
        [SOAK]
        if args.soak
        else [c for c in CASES if not args.cases or any(s in c.name for s in args.cases.split(","))]
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="stemdaq-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for case in cases:
            n = case.quick_frames if args.quick else case.frames
            kinds = ["stemdaq"] if args.soak else ["transport", "naive", "stemdaq"]
            res: dict[str, dict] = {}
            for kind in kinds:
                runs = [
                    measure(kind, case, n if kind != "naive" else max(n // 10, 200), tmp)
                    for _ in range(args.repeat)
                ]
                best = sorted(runs, key=lambda r: r["frames"] / r["seconds"])[len(runs) // 2]
                best["fps"] = statistics.median(r["frames"] / r["seconds"] for r in runs)
                res[kind] = best
                print(
                    f"  {case.name:24s} {kind:9s} {best['fps']:>10,.0f} frames/s  "
                    f"lost {best['lost']}  rss {best['rss_mb']:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append((case, n, res))
        status = None
        if not args.no_status and not args.soak:
            case = CASES[0]
            status = measure_service(case, case.quick_frames if args.quick else case.frames, tmp)
    print_table(rows)
    if args.soak:
        for _case, _n, res in rows:
            timeline = res["stemdaq"].get("timeline", [])
            print(
                "soak RSS (frames written: MB):",
                ", ".join(f"{w:,}: {r:.0f}" for w, r in timeline[:: max(1, len(timeline) // 12)]),
            )
    if status:
        print(
            f"status during full-rate ingest "
            f"({status['frames_written']}/{status['frames']} frames, "
            f"{status['state']}): {status['requests']} requests, p50 {status['p50_ms']:.1f} ms, "
            f"p99 {status['p99_ms']:.1f} ms, max {status['max_ms']:.1f} ms"
        )
    return 0


def print_table(rows: list) -> None:
    header = (
        f"{'case':24s} {'writer':9s} {'frames':>8s} {'frames/s':>10s} {'MB/s raw':>9s} "
        f"{'GB out':>7s} {'lost':>5s} {'RSS MB':>7s} {'exact':>5s}"
    )
    print(header)
    print("-" * len(header))
    ratios_t, ratios_n = [], []
    for case, _n, res in rows:
        for kind, r in res.items():
            mbs = r["fps"] * case.frame_nbytes / 1e6
            exact = r.get("exact", "")
            print(
                f"{case.name:24s} {kind:9s} {r['frames']:>8d} {r['fps']:>10,.0f} {mbs:>9,.0f} "
                f"{r.get('file_gb', 0):>7.2f} {r['lost']:>5d} {r['rss_mb']:>7.0f} {str(exact):>5s}"
            )
        if "transport" in res and "stemdaq" in res:
            rt = res["stemdaq"]["fps"] / res["transport"]["fps"]
            rn = res["stemdaq"]["fps"] / res["naive"]["fps"]
            print(f"{'':24s} ratio     stemdaq/transport={rt:.2f}  stemdaq/naive={rn:.1f}")
            if case.codec == "bslz4":
                ratios_t.append(rt)
            ratios_n.append(rn)
    if ratios_t:
        print(f"ratio_vs_transport={min(ratios_t):.2f} ratio_vs_naive={min(ratios_n):.1f}")


if __name__ == "__main__":
    sys.exit(main())
