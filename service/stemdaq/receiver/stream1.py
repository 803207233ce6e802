"""DECTRIS stream v1 ("legacy"): JSON + binary ZeroMQ multipart messages.

- Series start: ``dheader-1.0`` (``series``, ``header_detail`` none/basic/all), then, in the same
  multipart message, the detector config (a flat JSON object without ``htype``) for basic/all,
  header+blob pairs for flatfield / pixel mask / count-rate table (all), and an optional header
  appendix. The parts are whatever the message holds (RCVMORE), never counted in advance.
- Image: ``dimage-1.0`` (series, frame, hash), ``dimage_d-1.0`` (shape ``[x, y]``, type,
  encoding, size), the data blob, ``dconfig-1.0`` (start/stop/real time in ns), an optional
  appendix part.
- Series end: ``dseries_end-1.0``.

Tolerated quirks (each counted in :attr:`Stream1Decoder.quirks`):

- **Split header** (LiberTEM-live's ``ZMQReplay`` sends the dheader and the config as separate
  single-part messages). A lone ``dheader`` with header_detail basic/all is held; it is emitted
  as soon as its config arrives, or before the next image / end / header if none does. Header
  parts arriving as separate messages until then (config, blob headers, blobs, appendix) are
  swallowed, not rejected.
- ``deseries_end-1.0`` (LiberTEM-rs ``sim_gen.rs`` typo) ends the series like ``dseries_end-1.0``.
- Encoding ``>`` (big-endian) is byteswapped to little-endian raw; ``lz4>`` / ``bsNN-lz4>`` are
  decompressed and byteswapped to raw (no DCU is known to send them; they cost CPU, not data).
  The data part itself is read in :mod:`stemdaq.receiver.v1payload`.
"""

from __future__ import annotations

import json
from typing import Any

from stemdaq.errors import DecodeError
from stemdaq.models import Codec, DropReason, Frame, Rejected, SeriesEnd, SeriesStart, StreamEvent
from stemdaq.receiver.metadata import SKIP, detector_info, integer, number, plain
from stemdaq.receiver.v1payload import check_md5, data_part

#: stream v1 has one unnamed image channel; frames carry this name
V1_CHANNEL = "threshold_1"
_END_TYPES = frozenset({"dseries_end-1.0", "deseries_end-1.0"})
_BLOB_HEADER = ("flatfield", "pixelmask", "pixel_mask", "countrate")
_MAX_JSON = 1 << 22  # a header/config part larger than this is a blob, not JSON
_NS = 1e-9

# v1 config key -> DetectorInfo field (SIMPLON names)
_DETECTOR_KEYS = {
    "description": "description",
    "detector_number": "serial_number",
    "software_version": "software_version",
    "x_pixel_size": "pixel_size_x",
    "y_pixel_size": "pixel_size_y",
    "sensor_material": "sensor_material",
    "sensor_thickness": "sensor_thickness",
    "bit_depth_image": "bit_depth_image",
    "count_time": "count_time",
    "frame_time": "frame_time",
    "beam_center_x": "beam_center_x",
    "beam_center_y": "beam_center_y",
    "incident_energy": "incident_energy",
    "photon_energy": "incident_energy",
    "wavelength": "incident_wavelength",
    "incident_wavelength": "incident_wavelength",
    "detector_distance": "detector_distance",
    "countrate_correction_count_cutoff": "saturation_value",
    "saturation_value": "saturation_value",
    "compression": "compression",
}
_BIG = frozenset({"flatfield", "pixel_mask", "pixelmask", "countrate_correction_table"})


def looks_like_json(buf: memoryview) -> bool:
    """True if the first non-blank byte is ``{``."""
    for byte in buf[:64]:
        if byte == 0x7B:
            return True
        if byte not in (0x20, 0x09, 0x0A, 0x0D):
            return False
    return False


def parse_json(buf: memoryview) -> Any:
    """JSON part -> object; raises DecodeError(malformed)."""
    if len(buf) > _MAX_JSON:
        raise DecodeError("malformed", f"JSON part of {len(buf)} bytes is too large")
    try:
        return json.loads(bytes(buf))
    except (ValueError, RecursionError) as exc:
        raise DecodeError("malformed", f"invalid JSON part: {exc}") from None


def frames_in_series(config: dict[str, Any]) -> int | None:
    """Frames per series (LiberTEM-rs): ntrigger for exte/inte, nimages*ntrigger otherwise."""
    nimages, ntrigger = integer(config.get("nimages")), integer(config.get("ntrigger"))
    mode = config.get("trigger_mode")
    if mode in ("exte", "inte"):
        return ntrigger
    if nimages is None:
        return None
    return nimages * (ntrigger if ntrigger is not None else 1)


class Stream1Decoder:
    """Stateful stream v1 decoder (the state is the split-header tolerance). Not thread-safe."""

    def __init__(self, walk_blocks: bool = True, quirks: dict[str, int] | None = None) -> None:
        self.walk_blocks = walk_blocks
        self.quirks: dict[str, int] = quirks if quirks is not None else {}
        self._pending: SeriesStart | None = None  # split dheader waiting for its config
        self._pending_detail = "basic"
        self._in_split_header = False  # swallow lone header parts until the next real message

    @property
    def in_split_header(self) -> bool:
        """A split header is being received: lone non-JSON parts are its blobs."""
        return self._in_split_header

    def _quirk(self, name: str) -> None:
        self.quirks[name] = self.quirks.get(name, 0) + 1

    def flush(self) -> list[StreamEvent]:
        """Emit a held split-header start (if any) and leave the split-header state."""
        self._in_split_header = False
        if self._pending is None:
            return []
        start, self._pending = self._pending, None
        return [start]

    def header_blob(self) -> list[StreamEvent]:
        """A lone non-JSON message while a split header is in progress: one of its blobs."""
        self._quirk("split_header_part")
        return []

    def decode(self, parts: list[memoryview], first: dict[str, Any]) -> list[StreamEvent]:
        """Decode a message whose first part parsed to the JSON object ``first``. Never raises."""
        htype = first.get("htype")
        try:
            if isinstance(htype, str):
                if htype.startswith("dimage-"):
                    events = self.flush() if self._in_split_header else []
                    events.append(self._image(parts, first))
                    return events
                if htype in _END_TYPES:
                    if htype != "dseries_end-1.0":
                        self._quirk("typo_end_htype")
                    events = self.flush()
                    series = integer(first.get("series"))
                    if series is None:
                        events.append(
                            Rejected(DropReason.MALFORMED, "series end without integer series")
                        )
                    else:
                        events.append(SeriesEnd(series))
                    return events
                if htype.startswith("dheader-"):
                    return self.flush() + self._header(parts, first)
                if self._in_split_header and any(b in htype for b in _BLOB_HEADER):
                    self._quirk("split_header_part")
                    return []
                return [Rejected(DropReason.MALFORMED, f"unknown htype {htype!r:.40}")]
            if htype is None and self._in_split_header:
                return self._split_part(first)
            return [
                Rejected(DropReason.MALFORMED, "JSON message without htype outside a series header")
            ]
        except DecodeError as exc:
            return [
                Rejected(
                    DropReason(exc.reason),
                    exc.detail,
                    integer(first.get("series")),
                    integer(first.get("frame")),
                )
            ]

    # -- series header ------------------------------------------------------------------------

    def _header(self, parts: list[memoryview], first: dict[str, Any]) -> list[StreamEvent]:
        series = integer(first.get("series"))
        if series is None:
            return [Rejected(DropReason.MALFORMED, "dheader without integer series")]
        detail = first.get("header_detail")
        detail = (
            detail
            if detail in ("none", "basic", "all")
            else ("basic" if len(parts) > 1 else "none")
        )
        config: dict[str, Any] | None = None
        appendix: Any = None
        i, n = 1, len(parts)
        while i < n:
            part = parts[i]
            obj = None
            if looks_like_json(part) and len(part) <= _MAX_JSON:
                try:
                    obj = json.loads(bytes(part))
                except (ValueError, RecursionError):
                    obj = None
            if isinstance(obj, dict):
                ht = obj.get("htype")
                if ht is None and config is None and detail != "none":
                    config, i = obj, i + 1
                    continue
                if isinstance(ht, str) and any(b in ht for b in _BLOB_HEADER):
                    i += 2  # its blob follows
                    continue
            appendix = obj if obj is not None else _text(part)
            i += 1
        start = self._series_start(series, detail, config)
        if appendix is not None:
            value = plain(appendix)
            if value is not SKIP:
                start.raw["header_appendix"] = value
        if n == 1 and detail != "none":
            # split header (ZMQReplay): hold the start until its config arrives
            self._quirk("split_header")
            self._pending, self._pending_detail, self._in_split_header = start, detail, True
            return []
        if detail != "none" and config is None:
            return [
                start,
                Rejected(DropReason.MALFORMED, "dheader without a readable config part", series),
            ]
        return [start]

    def _split_part(self, obj: dict[str, Any]) -> list[StreamEvent]:
        """A lone htype-less JSON object after a split dheader: its config (or the appendix)."""
        self._quirk("split_header_part")
        pending = self._pending
        if pending is None or "config_received" in pending.raw:
            return []  # an appendix after the config, or after the start was emitted
        self._pending = None  # the config is all we need: emit now, keep swallowing parts
        start = self._series_start(pending.series_id, self._pending_detail, obj)
        start.raw.update({k: v for k, v in pending.raw.items() if k not in start.raw})
        return [start]

    def _series_start(self, series: int, detail: str, config: dict[str, Any] | None) -> SeriesStart:
        raw: dict[str, Any] = {"header_detail": detail}
        if config is None:
            return SeriesStart(series_id=series, protocol="stream1", raw=raw)
        raw["config_received"] = True
        fields: dict[str, Any] = {}
        for key, value in config.items():
            if key in _BIG:
                continue
            target = _DETECTOR_KEYS.get(key)
            if target is not None and target not in fields:
                fields[target] = value
            pv = plain(value)
            if pv is not SKIP and target is None:
                raw[key] = pv
        threshold = number(config.get("threshold_energy"))
        if threshold is not None:
            fields["threshold_energy"] = {V1_CHANNEL: threshold}
        nx, ny = (
            integer(config.get("x_pixels_in_detector")),
            integer(config.get("y_pixels_in_detector")),
        )
        n_images = frames_in_series(config)
        return SeriesStart(
            series_id=series,
            protocol="stream1",
            n_images=n_images if n_images is not None and n_images >= 0 else None,
            frame_shape=(ny, nx) if nx and ny and nx > 0 and ny > 0 else None,
            # dtype stays None: bit_depth_image may not match the stream (e.g. 8-bit ROI modes);
            # the series' first frame defines it
            detector=detector_info(fields, raw),
            raw=raw,
        )

    # -- images -------------------------------------------------------------------------------

    def _image(self, parts: list[memoryview], first: dict[str, Any]) -> StreamEvent:
        series, frame_id = integer(first.get("series")), integer(first.get("frame"))
        if series is None or frame_id is None:
            return Rejected(
                DropReason.MALFORMED, "dimage without integer series/frame", series, frame_id
            )
        if len(parts) < 3:
            return Rejected(
                DropReason.MALFORMED,
                f"image message has {len(parts)} parts, needs >= 3",
                series,
                frame_id,
            )
        try:
            desc = parse_json(parts[1])
            if not isinstance(desc, dict) or not str(desc.get("htype", "")).startswith("dimage_d-"):
                raise DecodeError("malformed", "second image part is not dimage_d")
            shape, dtype, codec, payload = data_part(desc, parts[2], self.walk_blocks, self._quirk)
            if codec is Codec.LZ4:  # a bare LZ4 block has no framing to check: use the md5
                check_md5(parts[2], first.get("hash"))
        except DecodeError as exc:
            return Rejected(DropReason(exc.reason), exc.detail, series, frame_id)
        times: tuple[float | None, ...] = (None, None, None)
        if len(parts) > 3:
            times = self._times(parts[3])
        return Frame(series, frame_id, V1_CHANNEL, shape, dtype, codec, payload, *times)

    def _times(self, part: memoryview) -> tuple[float | None, ...]:
        try:
            cfg = parse_json(part)
        except DecodeError:
            cfg = None
        if not isinstance(cfg, dict):
            self._quirk("unreadable_dconfig")
            return (None, None, None)
        out = []
        for key in ("start_time", "stop_time", "real_time"):
            value = number(cfg.get(key))
            out.append(value * _NS if value is not None else None)
        return tuple(out)


def _text(part: memoryview) -> str | None:
    if len(part) > 65536:
        return None
    try:
        return bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        return None
