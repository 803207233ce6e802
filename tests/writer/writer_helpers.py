"""Helpers for the writer tests: configs, start messages, frames, and independent encoders.

The pre-compressed payloads here are built with bitshuffle/lz4 directly (not with
``stemdaq.writer.codecs``), so the writer is checked against an independent implementation.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import bitshuffle
import lz4.block
import numpy as np
from stemdaq.config import AcquisitionConfig
from stemdaq.models import AcquisitionState, Codec, Counters, DetectorInfo, Frame, SeriesStart
from stemdaq.writer import NexusWriter

DATA = "/entry/measurement/event1/image1/image_4d"
BOOK = "/entry/measurement/event1/image1/frames"

FULL_METADATA: dict[str, Any] = {
    "title": "writer test",
    "experiment_identifier": "P-1",
    "users": [{"name": "A. User", "affiliation": "Lab", "orcid": "0000-0000-0000-0000"}],
    "sample": {
        "name": "Si wedge",
        "atom_types": ["Si", "O"],
        "preparation_date": "2024-05-01T10:00:00+02:00",
    },
    "microscope": {
        "name": "TEM-1",
        "vendor": "ThermoFisher",
        "model": "Spectra 300",
        "serial_number": "S-42",
        "location": "Lab 1",
        "emitter_type": "cold field emission",
    },
    "dwell_time": 1e-3,
}


def config(**kw: Any) -> AcquisitionConfig:
    base: dict[str, Any] = {"scan_shape": (3, 4), "scan_step": (2.0, 2.0), "flush_seconds": 60.0}
    base.update(kw)
    return AcquisitionConfig(**base)


def start(series_id: int = 7, **det: Any) -> SeriesStart:
    info = {
        "description": "Dectris ARINA Si 192x192",
        "serial_number": "E-32-0001",
        "pixel_size_x": 100e-6,
        "pixel_size_y": 100e-6,
        "sensor_material": "Si",
        "sensor_thickness": 320e-6,
        "bit_depth_image": 16,
        "count_time": 9e-4,
        "frame_time": 1e-3,
        "beam_center_x": 7.5,
        "beam_center_y": 5.5,
    }
    info.update(det)
    return SeriesStart(
        series_id=series_id,
        protocol="stream2",
        channels=("threshold_1",),
        detector=DetectorInfo(**info),
    )


def frame_data(i: int, shape: tuple[int, int] = (12, 16), dtype: str = "uint16") -> np.ndarray:
    rng = np.random.default_rng(i)
    hi = min(np.iinfo(dtype).max, 5000) if np.dtype(dtype).kind in "iu" else 100
    return rng.integers(0, hi, size=shape).astype(dtype)


def bslz4(arr: np.ndarray, block_bytes: int = 8192) -> bytes:
    a = np.ascontiguousarray(arr)
    body = bitshuffle.compress_lz4(a.reshape(-1), block_bytes // a.dtype.itemsize)
    return struct.pack(">QI", a.nbytes, block_bytes) + body.tobytes()


def lz4_hdf5(arr: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(arr).tobytes()
    packed = lz4.block.compress(raw, store_size=False)
    if len(packed) >= len(raw):
        packed = raw
    return struct.pack(">QI", len(raw), len(raw)) + struct.pack(">I", len(packed)) + packed


def make_frame(i: int, arr: np.ndarray, codec: Codec, channel: str = "threshold_1") -> Frame:
    payload = {
        Codec.RAW: arr.tobytes,
        Codec.BSLZ4: lambda: bslz4(arr),
        Codec.LZ4: lambda: lz4_hdf5(arr),
    }[codec]()
    return Frame(
        series_id=7,
        frame_id=i,
        channel=channel,
        shape=arr.shape,
        dtype=str(arr.dtype),
        codec=codec,
        payload=payload,
        start_time=i * 1e-3,
        stop_time=i * 1e-3 + 9e-4,
        real_time=9e-4,
    )


def write_scan(
    path: Path,
    cfg: AcquisitionConfig,
    *,
    codec: Codec = Codec.BSLZ4,
    dtype: str = "uint16",
    shape: tuple[int, int] = (12, 16),
    skip: tuple[int, ...] = (),
    summary: bool = False,
    state: AcquisitionState = AcquisitionState.COMPLETED,
    direct: bool = True,
) -> tuple[Path | None, dict[int, np.ndarray]]:
    """Write a whole scan the way the orchestrator does; return the final path and the frames."""
    from stemdaq.writer import SummaryAccumulator

    w = NexusWriter(path, cfg)
    w.open(
        start(),
        endpoint="tcp://127.0.0.1:31001",
        channels=["threshold_1"],
        frame_shape=shape,
        dtype=dtype,
        codec=codec,
    )
    acc = SummaryAccumulator(cfg.scan_shape, shape, dtype) if summary else None
    frames: dict[int, np.ndarray] = {}
    for pos in range(cfg.n_positions):
        if pos in skip:
            continue
        arr = frame_data(pos, shape, dtype)
        frame = make_frame(pos, arr, codec)
        use_direct = direct and frame.codec is w.filter_codec and frame.codec is not Codec.RAW
        chunk = frame.payload if use_direct else w.prepare(frame)
        w.write(pos, 0, chunk, frame)
        if acc is not None:
            while not acc.offer(pos, frame):  # tests want every frame summed
                import time

                time.sleep(0.001)
        frames[pos] = arr
    n = len(frames)
    final = w.close(state, Counters(frames_expected=cfg.n_positions, frames_written=n), acc)
    return final, frames


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from writer_helpers import config, start, frame_data, make_frame
    from stemdaq.models import Codec
    from stemdaq.writer import NexusWriter
    codec = Codec(sys.argv[2])
    w = NexusWriter(Path(sys.argv[1]), config(scan_shape=(4, 5), flush_frames=5, flush_seconds=600))
    w.open(start(), endpoint="tcp://x:1", channels=["threshold_1"], frame_shape=(12, 16),
           dtype="uint16", codec=codec)
    for pos in range(13):  # 10 flushed (every 5 frames), 3 not
        frame = make_frame(pos, frame_data(pos), codec)
        w.write(pos, 0, w.prepare(frame) if codec is Codec.RAW else frame.payload, frame)
    print("written", flush=True)
    time.sleep(60)
""").format(here=str(Path(__file__).parent))


def killed_writer_partial(final: Path, codec: Codec = Codec.BSLZ4) -> Path:
    """The ``.partial`` a writer process leaves when killed (SIGKILL) after 13 frames of a 4x5
    scan of 12x16 uint16 frames (``frame_data``), 10 of them flushed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(final), codec.value],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "written", proc.stderr.read() if proc.poll() is not None else line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    partial = final.with_name(final.name + ".partial")
    assert partial.exists() and not final.exists()
    return partial
