"""Message builders for the receiver tests, written from the wire notes (not from stemdaq.sim).

``wire`` builds DECTRIS stream v2 (CBOR) and v1 (JSON multipart) messages and payloads, and
decodes payloads back to arrays with an independent reference implementation.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import bitshuffle
import cbor2
import lz4.block
import numpy as np
import pytest
from cbor2 import CBORTag

MAGIC = b"\xd9\xd9\xf7"
TYPED_TAG = {"uint8": 64, "uint16": 69, "uint32": 70, "float32": 85}


class Wire:
    """Builders for stream messages and codecs."""

    # -- codecs -------------------------------------------------------------------------------

    @staticmethod
    def bslz4(arr: np.ndarray, block_bytes: int = 8192) -> bytes:
        """Bitshuffle-LZ4 with the 12-byte HDF5 header (as ansto-simplon-api builds it)."""
        arr = np.ascontiguousarray(arr)
        block = block_bytes // arr.dtype.itemsize
        body = bitshuffle.compress_lz4(arr, block).tobytes()
        return struct.pack(">QI", arr.nbytes, block_bytes) + body

    @staticmethod
    def unbslz4(payload: bytes | memoryview, shape: tuple[int, int], dtype: str) -> np.ndarray:
        orig, block = struct.unpack_from(">QI", payload, 0)
        itemsize = np.dtype(dtype).itemsize
        assert orig == shape[0] * shape[1] * itemsize
        buf = np.frombuffer(payload, dtype=np.uint8, offset=12)
        return bitshuffle.decompress_lz4(buf, shape, np.dtype(dtype), block // itemsize)

    @staticmethod
    def lz4_hdf5(raw: bytes, block: int = 16384) -> bytes:
        """HDF5-LZ4 (filter 32004) framing: u64 BE size, u32 BE block, (u32 BE n + block)*."""
        out = [struct.pack(">QI", len(raw), block)]
        for i in range(0, len(raw), block):
            chunk = raw[i : i + block]
            comp = lz4.block.compress(chunk, store_size=False)
            if len(comp) >= len(chunk):
                comp = chunk
            out.append(struct.pack(">I", len(comp)) + comp)
        return b"".join(out)

    @staticmethod
    def unlz4_hdf5(payload: bytes | memoryview, shape: tuple[int, int], dtype: str) -> np.ndarray:
        payload = bytes(payload)
        orig, block = struct.unpack_from(">QI", payload, 0)
        pos, out = 12, []
        remaining = orig
        while remaining:
            length = min(block, remaining)
            (size,) = struct.unpack_from(">I", payload, pos)
            data = payload[pos + 4 : pos + 4 + size]
            out.append(
                data if size == length else lz4.block.decompress(data, uncompressed_size=length)
            )
            pos += 4 + size
            remaining -= length
        assert pos == len(payload)
        return np.frombuffer(b"".join(out), dtype=dtype).reshape(shape)

    @staticmethod
    def frame_array(
        shape: tuple[int, int] = (192, 192), dtype: str = "uint16", seed: int = 0
    ) -> np.ndarray:
        """A sparse diffraction-like frame (compresses well, like real 4D-STEM frames)."""
        rng = np.random.default_rng(seed)
        info_max = 200 if np.dtype(dtype).kind == "f" else min(np.iinfo(dtype).max, 1000)
        arr = rng.poisson(0.3, size=shape).astype(dtype)
        ny, nx = shape
        arr[ny // 2 - 3 : ny // 2 + 3, nx // 2 - 3 : nx // 2 + 3] = info_max
        return arr

    # -- stream v2 ----------------------------------------------------------------------------

    def v2(self, msg: dict[str, Any], magic: bool = True) -> bytes:
        data = cbor2.dumps(msg)
        return MAGIC + data if magic else data

    def v2_start(
        self,
        series_id: int = 7,
        n: int = 16,
        shape: tuple[int, int] = (192, 192),
        dtype: str = "uint16",
        channels: tuple[str, ...] = ("threshold_1",),
        **extra: Any,
    ) -> dict:
        ny, nx = shape
        msg = {
            "type": "start",
            "series_id": series_id,
            "series_unique_id": f"uid-{series_id}",
            "arm_date": CBORTag(0, "2026-01-02T03:04:05.678Z"),
            "beam_center_x": 96.5,
            "beam_center_y": 95.25,
            "channels": list(channels),
            "count_time": 0.0009,
            "frame_time": 0.001,
            "countrate_correction_enabled": False,
            "detector_description": "Dectris ARINA Si 192x192",
            "detector_serial_number": "E-01-0001",
            "detector_translation": [0.0, 0.0, 0.1],
            "flatfield_enabled": False,
            "flatfield": {
                c: CBORTag(40, [[ny, nx], CBORTag(85, b"\0" * (4 * nx * ny))]) for c in channels
            },
            "goniometer": {"omega": {"increment": 0.0, "start": 0.0}},
            "image_dtype": dtype,
            "image_size_x": nx,
            "image_size_y": ny,
            "incident_energy": 300000.0,
            "incident_wavelength": 0.0197,
            "number_of_images": n,
            "pixel_mask": {
                c: CBORTag(40, [[ny, nx], CBORTag(70, b"\0" * (4 * nx * ny))]) for c in channels
            },
            "pixel_mask_enabled": True,
            "pixel_size_x": 1e-4,
            "pixel_size_y": 1e-4,
            "saturation_value": 65535,
            "sensor_material": "Si",
            "sensor_thickness": 4.5e-4,
            "threshold_energy": {c: 2000.0 * (i + 1) for i, c in enumerate(channels)},
            "user_data": {"operator": "test"},
            "virtual_pixel_interpolation_enabled": False,
        }
        msg.update(extra)
        return msg

    def mda(self, arr: np.ndarray, codec: str = "bslz4", column_major: bool = False) -> CBORTag:
        dtype = str(arr.dtype)
        tag = TYPED_TAG[dtype]
        ny, nx = arr.shape
        if codec == "bslz4":
            inner: Any = CBORTag(56500, ["bslz4", arr.dtype.itemsize, self.bslz4(arr)])
        elif codec == "lz4":
            inner = CBORTag(56500, ["lz4", 0, self.lz4_hdf5(arr.tobytes())])
        else:
            inner = np.asfortranarray(arr).tobytes(order="F") if column_major else arr.tobytes()
        return CBORTag(1040 if column_major else 40, [[ny, nx], CBORTag(tag, inner)])

    def v2_image(
        self,
        image_id: int,
        arrays: dict[str, np.ndarray] | np.ndarray,
        series_id: int = 7,
        codec: str = "bslz4",
        **extra: Any,
    ) -> dict:
        if isinstance(arrays, np.ndarray):
            arrays = {"threshold_1": arrays}
        msg = {
            "type": "image",
            "series_id": series_id,
            "series_unique_id": f"uid-{series_id}",
            "image_id": image_id,
            "real_time": [215873, 50000000],
            "series_date": CBORTag(0, "2026-01-02T03:04:05.678Z"),
            "start_time": [50000 * image_id, 50000000],
            "stop_time": [50000 * image_id + 45000, 50000000],
            "user_data": None,
            "data": {ch: self.mda(a, codec) for ch, a in arrays.items()},
        }
        msg.update(extra)
        return msg

    def v2_end(self, series_id: int = 7) -> dict:
        return {"type": "end", "series_id": series_id, "series_unique_id": f"uid-{series_id}"}

    # -- stream v1 ----------------------------------------------------------------------------

    @staticmethod
    def j(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def v1_config(
        self,
        shape: tuple[int, int] = (192, 192),
        nimages: int = 16,
        ntrigger: int = 1,
        trigger_mode: str = "exts",
        bits: int = 16,
        **extra: Any,
    ) -> dict:
        ny, nx = shape
        cfg = {
            "nimages": nimages,
            "ntrigger": ntrigger,
            "trigger_mode": trigger_mode,
            "x_pixels_in_detector": nx,
            "y_pixels_in_detector": ny,
            "bit_depth_image": bits,
            "compression": "bslz4",
            "count_time": 0.0009,
            "frame_time": 0.001,
            "description": "Dectris QUADRO Si 250K",
            "detector_number": "E-02-0002",
            "software_version": "1.8.0",
            "x_pixel_size": 7.5e-5,
            "y_pixel_size": 7.5e-5,
            "sensor_material": "Si",
            "sensor_thickness": 4.5e-4,
            "beam_center_x": 10.0,
            "beam_center_y": 20.0,
            "detector_distance": 0.125,
            "incident_energy": 200000.0,
            "wavelength": 0.0251,
            "threshold_energy": 4000.0,
            "roi_mode": "disabled",
        }
        cfg.update(extra)
        return cfg

    def v1_header(
        self,
        series: int = 3,
        detail: str = "basic",
        config: dict | None = None,
        appendix: bytes | None = None,
    ) -> list[bytes]:
        parts = [self.j({"htype": "dheader-1.0", "series": series, "header_detail": detail})]
        if detail in ("basic", "all"):
            parts.append(self.j(config if config is not None else self.v1_config()))
        if detail == "all":
            for htype, dtype, fill in (
                ("dflatfield-1.0", "float32", b"{" * 16),
                ("dpixelmask-1.0", "uint32", b"\x00" * 16),
                ("dcountrate_table-1.0", "float32", b"\xa1" * 16),
            ):
                parts.append(self.j({"htype": htype, "shape": [2, 2], "type": dtype}))
                parts.append(fill)  # blobs that look like JSON / CBOR on purpose
        if appendix is not None:
            parts.append(appendix)
        return parts

    def v1_image(
        self,
        frame: int,
        arr: np.ndarray,
        series: int = 3,
        encoding: str = "bs16-lz4<",
        appendix: bytes | None = None,
        dconfig: bool = True,
    ) -> list[bytes]:
        ny, nx = arr.shape
        if encoding == "<":
            blob = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        elif encoding == ">":
            blob = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
        elif encoding == "lz4<":
            blob = lz4.block.compress(arr.tobytes(), store_size=False)
        elif encoding.startswith("bs"):
            blob = self.bslz4(arr)
        else:
            raise ValueError(encoding)
        parts = [
            self.j({"htype": "dimage-1.0", "series": series, "frame": frame, "hash": ""}),
            self.j(
                {
                    "htype": "dimage_d-1.0",
                    "shape": [nx, ny],
                    "type": str(arr.dtype),
                    "encoding": encoding,
                    "size": len(blob),
                }
            ),
            blob,
        ]
        if dconfig:
            parts.append(
                self.j(
                    {
                        "htype": "dconfig-1.0",
                        "start_time": 1_000_000 * frame,
                        "stop_time": 1_000_000 * frame + 900_000,
                        "real_time": 900_000,
                    }
                )
            )
        if appendix is not None:
            parts.append(appendix)
        return parts

    def v1_end(self, series: int = 3, htype: str = "dseries_end-1.0") -> list[bytes]:
        return [self.j({"htype": htype, "series": series})]


@pytest.fixture
def wire() -> Wire:
    """Stream message builders."""
    return Wire()
