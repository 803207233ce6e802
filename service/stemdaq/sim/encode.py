"""DECTRIS stream messages, written from the wire spec (reference notes, sections 1.2, 1.3, B).

A *message* is a list of ZeroMQ frames (parts): stream v2 messages have one part, stream v1
images four (five with an image appendix). :class:`SeriesEncoder` builds the messages of one
series and applies the configured faults; :func:`stemdaq.sim.replay.encode_series` returns a
whole series for replay and benchmarks.

This is an independent implementation of the protocol: it does not share code with
``stemdaq.receiver``, so the two check each other.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cbor2
import numpy as np
from cbor2 import CBORTag

from stemdaq.sim.compress import frame_payload
from stemdaq.sim.faults import (
    WRONG_SERIES_OFFSET,
    Faults,
    InjectionLog,
    corrupt_payload,
    truncate_payload,
)
from stemdaq.sim.frames import FrameGenerator
from stemdaq.sim.params import BIT_DEPTH_DTYPE, DTYPE_BIT_DEPTH

Message = list[bytes]

CBOR_MAGIC = b"\xd9\xd9\xf7"  # tag 55799, self-described CBOR; DECTRIS' stream2.c requires it
TIME_BASE = 50_000_000  # Hz, the Rational denominator of the real sample
TYPED_ARRAY_TAG = {"uint8": 64, "uint16": 69, "uint32": 70, "float32": 85}


@dataclass
class SeriesInfo:
    """Everything the messages of one series need to say."""

    series_id: int
    n_images: int
    config: dict[str, Any]  # detector config values (SIMPLON names)
    fmt: str = "cbor"  # "cbor" (v2) | "json"/"legacy" (v1)
    header_detail: str = "basic"
    split_header: bool = False  # v1: header parts as separate messages (LiberTEM ZMQReplay quirk)
    channels: tuple[str, ...] = ("threshold_1",)
    unique_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    arm_date: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds")
    )
    user_data: dict[str, Any] = field(default_factory=dict)
    header_appendix: str = ""
    image_appendix: str = ""

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return (int(self.config["y_pixels_in_detector"]), int(self.config["x_pixels_in_detector"]))

    @property
    def dtype(self) -> str:
        """numpy dtype name from ``bit_depth_image``."""
        return BIT_DEPTH_DTYPE[int(self.config["bit_depth_image"])]

    @property
    def compression(self) -> str:
        """``bslz4`` | ``lz4`` | ``none``."""
        return str(self.config["compression"])

    @property
    def v2(self) -> bool:
        """True for stream v2 (CBOR)."""
        return self.fmt == "cbor"


def _rational(seconds: float) -> list[int]:
    return [round(seconds * TIME_BASE), TIME_BASE]


def _v2(msg: dict[str, Any]) -> Message:
    return [CBOR_MAGIC + cbor2.dumps(msg)]


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


class SeriesEncoder:
    """Build the messages of one series, applying ``faults`` and recording them in ``log``."""

    def __init__(
        self,
        info: SeriesInfo,
        generator: FrameGenerator,
        faults: Faults | None = None,
        log: InjectionLog | None = None,
    ) -> None:
        self.info = info
        self.generator = generator
        self.faults = faults or Faults()
        self.log = log if log is not None else InjectionLog()
        cfg = info.config
        self.frame_time = float(cfg["frame_time"])
        self.count_time = float(cfg["count_time"])
        self._date = CBORTag(0, info.arm_date)

    # -- series framing -------------------------------------------------------------------------

    def start(self) -> list[Message]:
        """The start message (v1: the global header, possibly split into several messages)."""
        return [self._start_v2()] if self.info.v2 else self._start_v1()

    def end(self) -> list[Message]:
        """The end message, unless the ``no_end`` fault suppresses it."""
        sid = self.info.series_id
        if self.faults.no_end:
            self.log.add("no_end", sid)
            return []
        if self.info.v2:
            return [_v2({"type": "end", "series_id": sid, "series_unique_id": self.info.unique_id})]
        return [[_json({"htype": "dseries_end-1.0", "series": sid})]]

    def order(self, image_ids: list[int]) -> list[int]:
        """Send order of a batch of ids (``reorder`` faults applied and recorded)."""
        ordered = self.faults.order(image_ids)
        for n, i in enumerate(image_ids):
            if ordered[n] != i and i in self.faults.reorder:
                self.log.add("reorder", self.info.series_id, i)
        return ordered

    def aborts_at(self, image_id: int) -> bool:
        """True if the ``abort_after`` fault stops the series before ``image_id``."""
        return self.faults.abort_after is not None and image_id >= self.faults.abort_after

    # -- images ---------------------------------------------------------------------------------

    def image(self, image_id: int) -> list[Message]:
        """The messages for ``image_id``: none (dropped), one, or two (duplicated)."""
        f, sid = self.faults, self.info.series_id
        if image_id in f.drop:
            self.log.add("drop", sid, image_id)
            return []
        compression = self.info.compression
        bare = compression == "lz4" and not self.info.v2
        payloads = []
        for n, _channel in enumerate(self.info.channels):
            frame = self.generator.frame(image_id, channel=n)
            payloads.append(frame_payload(frame, compression, bare_lz4=bare))
        good = payloads
        if image_id in f.corrupt:
            self.log.add("corrupt", sid, image_id)
            payloads = [corrupt_payload(p, compression, bare) for p in payloads]
        if image_id in f.truncate:
            self.log.add("truncate", sid, image_id)
            payloads = [truncate_payload(p) for p in payloads]
        series_id, unique_id = sid, self.info.unique_id
        if image_id in f.wrong_series:
            self.log.add("wrong_series", sid, image_id)
            series_id, unique_id = sid + WRONG_SERIES_OFFSET, unique_id + "-other"
        if self.info.v2:
            msg = self._image_v2(image_id, payloads, series_id, unique_id)
        else:
            msg = self._image_v1(image_id, payloads[0], good[0], series_id)
        if image_id in f.malformed:
            self.log.add("malformed", sid, image_id)
            msg = (
                [CBOR_MAGIC + b"\xff" + msg[0][4:]]
                if self.info.v2
                else [b'{"htype": "dimage-1.0", '] + msg[1:]
            )
        if image_id in f.duplicate:
            self.log.add("duplicate", sid, image_id)
            return [msg, list(msg)]
        return [msg]

    def _times(self, image_id: int) -> tuple[float, float, float]:
        start = image_id * self.frame_time
        return start, start + self.count_time, self.count_time

    def _image_v2(
        self, image_id: int, payloads: list[bytes], series_id: int, unique_id: str
    ) -> Message:
        ny, nx = self.info.frame_shape
        dtype = self.info.dtype
        tag = TYPED_ARRAY_TAG[dtype]
        itemsize = np.dtype(dtype).itemsize
        compression = self.info.compression
        data = {}
        for channel, payload in zip(self.info.channels, payloads, strict=True):
            if compression == "bslz4":
                body: Any = CBORTag(56500, ["bslz4", itemsize, payload])
            elif compression == "lz4":
                body = CBORTag(56500, ["lz4", 0, payload])
            else:
                body = payload
            data[channel] = CBORTag(40, [[ny, nx], CBORTag(tag, body)])
        start, stop, real = self._times(image_id)
        msg: dict[str, Any] = {
            "type": "image",
            "series_id": series_id,
            "series_unique_id": unique_id,
            "image_id": image_id,
            "real_time": _rational(real),
            "series_date": self._date,
            "start_time": _rational(start),
            "stop_time": _rational(stop),
            "data": data,
        }
        if self.info.image_appendix:
            msg["user_data"] = self.info.image_appendix
        return _v2(msg)

    def _image_v1(self, image_id: int, payload: bytes, good: bytes, series_id: int) -> Message:
        ny, nx = self.info.frame_shape
        dtype = self.info.dtype
        bits = 8 * np.dtype(dtype).itemsize
        encoding = {"bslz4": f"bs{bits}-lz4<", "lz4": "lz4<", "none": "<"}[self.info.compression]
        start, stop, real = self._times(image_id)
        parts = [
            _json(
                {
                    "htype": "dimage-1.0",
                    "series": series_id,
                    "frame": image_id,
                    "hash": hashlib.md5(good).hexdigest(),
                }
            ),  # noqa: S324 - the protocol's hash
            _json(
                {
                    "htype": "dimage_d-1.0",
                    "shape": [nx, ny],
                    "type": dtype,
                    "encoding": encoding,
                    "size": len(good),
                }
            ),
            payload,
            _json(
                {
                    "htype": "dconfig-1.0",
                    "start_time": round(start * 1e9),
                    "stop_time": round(stop * 1e9),
                    "real_time": round(real * 1e9),
                }
            ),
        ]
        if self.info.image_appendix:
            parts.append(self.info.image_appendix.encode())
        return parts

    # -- headers --------------------------------------------------------------------------------

    def _start_v2(self) -> Message:
        info, cfg = self.info, self.info.config
        ny, nx = info.frame_shape
        dtype = info.dtype
        thresholds = {
            ch: float(cfg["threshold_energy"]) * (1 + 0.5 * n) for n, ch in enumerate(info.channels)
        }
        msg: dict[str, Any] = {
            "type": "start",
            "series_id": info.series_id,
            "series_unique_id": info.unique_id,
            "arm_date": self._date,
            "beam_center_x": float(cfg["beam_center_x"]),
            "beam_center_y": float(cfg["beam_center_y"]),
            "channels": list(info.channels),
            "count_time": self.count_time,
            "countrate_correction_enabled": bool(cfg["countrate_correction_applied"]),
            "detector_description": str(cfg["description"]),
            "detector_serial_number": str(cfg["detector_number"]),
            "detector_translation": [0.0, 0.0, float(cfg["detector_distance"])],
            "flatfield_enabled": bool(cfg["flatfield_correction_applied"]),
            "frame_time": self.frame_time,
            "image_dtype": dtype,
            "image_size_x": nx,
            "image_size_y": ny,
            "incident_energy": float(cfg["incident_energy"]),
            "incident_wavelength": float(cfg["wavelength"]),
            "number_of_images": info.n_images,
            "pixel_mask_enabled": bool(cfg["pixel_mask_applied"]),
            "pixel_size_x": float(cfg["x_pixel_size"]),
            "pixel_size_y": float(cfg["y_pixel_size"]),
            "saturation_value": int(np.iinfo(dtype).max),
            "sensor_material": str(cfg["sensor_material"]),
            "sensor_thickness": float(cfg["sensor_thickness"]),
            "threshold_energy": thresholds,
            "user_data": info.user_data,
            "virtual_pixel_interpolation_enabled": False,
        }
        if info.header_detail == "all":
            ones = np.ones((ny, nx), "<f4").tobytes()
            zeros = np.zeros((ny, nx), "<u4").tobytes()
            msg["flatfield"] = {
                ch: CBORTag(40, [[ny, nx], CBORTag(85, ones)]) for ch in info.channels
            }
            msg["pixel_mask"] = {
                ch: CBORTag(40, [[ny, nx], CBORTag(70, zeros)]) for ch in info.channels
            }
            msg["countrate_correction_lookup_table"] = CBORTag(
                70, np.arange(1000, dtype="<u4").tobytes()
            )
        if info.header_appendix:
            msg["user_data"] = {**info.user_data, "header_appendix": info.header_appendix}
        return _v2(msg)

    def _start_v1(self) -> list[Message]:
        info = self.info
        ny, nx = info.frame_shape
        parts = [
            _json(
                {
                    "htype": "dheader-1.0",
                    "series": info.series_id,
                    "header_detail": info.header_detail,
                }
            )
        ]
        if info.header_detail in ("basic", "all"):
            config = dict(info.config)
            config["bit_depth_image"] = DTYPE_BIT_DEPTH[info.dtype]
            parts.append(_json(config))
        if info.header_detail == "all":
            parts += [
                _json({"htype": "dflatfield-1.0", "shape": [nx, ny], "type": "float32"}),
                np.ones((ny, nx), "<f4").tobytes(),
                _json({"htype": "dpixelmask-1.0", "shape": [nx, ny], "type": "uint32"}),
                np.zeros((ny, nx), "<u4").tobytes(),
                _json({"htype": "dcountrate_table-1.0", "shape": [1000, 2], "type": "float32"}),
                np.zeros((2, 1000), "<f4").tobytes(),
            ]
        if info.header_appendix:
            parts.append(info.header_appendix.encode())
        if info.split_header:
            return [[p] for p in parts]
        return [parts]


def n_frames(config: dict[str, Any]) -> int:
    """Frames in a series: ``nimages*ntrigger`` (``ints``/``exts``), ``ntrigger`` (``*e``)."""
    ntrigger = int(config["ntrigger"])
    if str(config["trigger_mode"]).endswith("e"):
        return ntrigger
    return int(config["nimages"]) * ntrigger
