"""The sender plays the detector: pre-encoded stream messages, as fast as ZeroMQ takes them.

Messages are encoded once (a few template frames, bitshuffle-LZ4 framed by stemdaq's simulator
encoder, as a DECTRIS DCU frames them); per image only the image id is patched into a
fixed-width slot, so the sender is never the limit on its own. The sender binds PUSH (as a DCU
does), sends the series start (which blocks until a receiver connects), says so, and waits for
the driver's go before it sends the images and the end of the series.

Timing: ``t_first`` is ``time.time()`` just before the first image is sent; the driver measures
every receiver from there.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq
from cases import Case, synthetic_frames

# the sender plays the detector: it frames bslz4 payloads as the simulated DCU does
from stemdaq.sim.compress import bslz4

MAGIC = b"\xd9\xd9\xf7"  # CBOR self-describe tag 55799, which DECTRIS stream v2 messages start with
PLACEHOLDER = 0xFFFFFFF0  # encoded as 1a fffffff0: a fixed-width slot for the image id
TYPED_ARRAY_TAG = {"uint8": 64, "uint16": 69, "uint32": 70}
SERIES = 7
V1_SLOT = 10  # characters of the stream v1 "frame" value in the dimage head
V1_OFFSET = len(f'{{"htype":"dimage-1.0","series":{SERIES},"frame":')
_CTX = mp.get_context("fork")


def v2_messages(case: Case, n: int) -> tuple[bytes, list[bytearray], list[int], bytes]:
    """Stream v2: start, image templates (with the offset of their id slot), end.

    Images have the key order and keys of a DECTRIS DCU's (type, series_id, series_unique_id,
    image_id, real_time, series_date, start_time, stop_time, data), so receivers meet what a
    detector sends.

    The start message announces ``n`` images, the number actually sent.
    """
    import cbor2

    def dumps(obj: dict[str, Any]) -> bytes:
        return MAGIC + cbor2.dumps(obj)

    ny, nx = case.shape
    uid = f"bench-{SERIES}"
    start = dumps(
        {
            "type": "start",
            "series_id": SERIES,
            "series_unique_id": uid,
            "number_of_images": n,
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
        if case.codec == "bslz4":
            typed: Any = cbor2.CBORTag(56500, ["bslz4", arr.itemsize, bslz4(arr)])
        else:
            typed = arr.tobytes()
        msg = dumps(
            {
                "type": "image",
                "series_id": SERIES,
                "series_unique_id": uid,
                "image_id": PLACEHOLDER,
                "real_time": [100, 1_000_000_000],
                "series_date": cbor2.CBORTag(0, "2026-12-01T00:00:00.000+00:00"),
                "start_time": [123_456_789, 1_000_000_000],  # ns since arm, as a DCU sends
                "stop_time": [123_556_789, 1_000_000_000],
                "data": {
                    "threshold_1": cbor2.CBORTag(
                        40, [[ny, nx], cbor2.CBORTag(TYPED_ARRAY_TAG[case.dtype], typed)]
                    )
                },
            }
        )
        templates.append(bytearray(msg))
        offsets.append(msg.index(slot) + 1)
    end = dumps({"type": "end", "series_id": SERIES, "series_unique_id": uid})
    return start, templates, offsets, end


def v1_messages(
    case: Case, n: int
) -> tuple[list[bytes], list[tuple[bytearray, bytes, bytes]], bytes]:
    """Stream v1: header parts (announcing ``n`` images), parts per template frame, end.

    Each template is ``(dimage head, dimage_d, blob)``; the head's ``"frame"`` value is a
    slot of ``V1_SLOT`` characters at ``V1_OFFSET`` (a space-padded number: JSON allows the
    spaces), patched per image.
    """
    ny, nx = case.shape
    bits = 8 * np.dtype(case.dtype).itemsize
    header = [
        json.dumps({"htype": "dheader-1.0", "series": SERIES, "header_detail": "basic"}).encode(),
        json.dumps(
            {
                "nimages": n,
                "ntrigger": 1,
                "trigger_mode": "ints",
                "x_pixels_in_detector": nx,
                "y_pixels_in_detector": ny,
                "bit_depth_image": bits,
                "compression": "bslz4",
                "description": "bench",
            }
        ).encode(),
    ]
    frames: list[tuple[bytearray, bytes, bytes]] = []
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
        md5 = hashlib.md5(blob).hexdigest()
        head = f'{{"htype":"dimage-1.0","series":{SERIES},"frame":{0:{V1_SLOT}d},"hash":"{md5}"}}'
        frames.append((bytearray(head.encode()), d, blob))
    end = json.dumps({"htype": "dseries_end-1.0", "series": SERIES}).encode()
    return header, frames, end


@dataclass
class Control:
    """Events and values shared between the driver and the sender process."""

    ready: Any = field(default_factory=_CTX.Event)  # bound, messages encoded
    connected: Any = field(default_factory=_CTX.Event)  # the start went to a receiver
    go: Any = field(default_factory=_CTX.Event)  # the driver sampled the receiver: send
    done: Any = field(default_factory=_CTX.Event)  # everything handed to ZeroMQ's peer
    t_first: Any = field(default_factory=lambda: _CTX.Value("d", 0.0))
    t_last: Any = field(default_factory=lambda: _CTX.Value("d", 0.0))
    sent: Any = field(default_factory=lambda: _CTX.Value("q", 0, lock=False))


def _send(endpoint: str, case: Case, n: int, ctl: Control) -> None:
    """The sender process: bind PUSH, send start, wait for go, replay n images, send end."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.LINGER, -1)
    sent = ctl.sent
    if case.protocol == "stream2":
        start, templates, offsets, end = v2_messages(case, n)
        sock.bind(endpoint)
        ctl.ready.set()
        sock.send(start)  # blocks until a receiver connected
        ctl.connected.set()
        ctl.go.wait()
        k = len(templates)
        pack = struct.Struct(">I").pack_into
        ctl.t_first.value = time.time()
        for i in range(n):
            msg = templates[i % k]
            pack(msg, offsets[i % k], i)
            sock.send(msg)  # copies: the template is patched again next round
            if not i & 4095:
                sent.value = i
    else:
        header, frames, end = v1_messages(case, n)
        sock.bind(endpoint)
        ctl.ready.set()
        sock.send_multipart(header)
        ctl.connected.set()
        ctl.go.wait()
        k = len(frames)
        cfg = b'{"htype":"dconfig-1.0","start_time":0,"stop_time":100000,"real_time":100000}'
        ctl.t_first.value = time.time()
        for i in range(n):
            head, d, blob = frames[i % k]
            head[V1_OFFSET : V1_OFFSET + V1_SLOT] = b"%*d" % (V1_SLOT, i)
            sock.send(head, zmq.SNDMORE)  # copied: the template is patched again next round
            sock.send(d, zmq.SNDMORE, copy=False)
            sock.send(blob, zmq.SNDMORE, copy=False)
            sock.send(cfg, copy=False)
            if not i & 4095:
                sent.value = i
    ctl.t_last.value = time.time()
    sent.value = n
    sock.send(end)
    sock.close()  # linger -1: returns once everything is handed to the peer
    ctx.term()
    ctl.done.set()


class Sender:
    """One sender process for one run: ``start()``, then the receiver, then ``release()``."""

    def __init__(self, endpoint: str, case: Case, n: int) -> None:
        self.endpoint, self.case, self.n = endpoint, case, n
        self.ctl = Control()
        self._proc = _CTX.Process(
            target=_send, args=(endpoint, case, n, self.ctl), name="bench-sender", daemon=True
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start the process; return once it is bound (the receiver may connect)."""
        self._proc.start()
        if not self.ctl.ready.wait(timeout):
            raise RuntimeError("the sender did not bind in time")

    def wait_connected(self, alive: Any, timeout: float = 120.0) -> None:
        """Wait until a receiver took the series start; ``alive()`` False: the receiver died."""
        deadline = time.monotonic() + timeout
        while not self.ctl.connected.wait(0.05):
            if not alive():
                raise RuntimeError("the receiver exited before it connected")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no receiver connected within {timeout:g} s")

    def release(self) -> None:
        """Let the sender send the images and the end of the series."""
        self.ctl.go.set()

    @property
    def t_first(self) -> float:
        """``time.time()`` just before the first image was sent (0 before that)."""
        return float(self.ctl.t_first.value)

    @property
    def sent(self) -> int:
        """Images handed to ZeroMQ so far (updated every 4096 images)."""
        return int(self.ctl.sent.value)

    def finish(self, timeout: float = 30.0) -> None:
        """Wait for the sender; end it if it is stuck (its receiver gone)."""
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
