"""DECTRIS stream v2: one CBOR map per ZeroMQ message (``start`` / ``image`` / ``end``).

Wire format (dectris/documentation ``stream_v2``): optional self-describe tag 55799 (DECTRIS
sends it, ansto-simplon-api does not; both are accepted), a map whose ``type`` is ``start``,
``image`` or ``end``. Image ``data`` is ``{channel: MultiDimArray}`` with MultiDimArray =
tag 40 ``[[ny, nx], TypedArray]`` (row-major; tag 1040 = column-major) and TypedArray = tag
64/68 (u8), 69 (u16 LE), 70 (u32 LE), 72 (i8), 77 (i16 LE), 78 (i32 LE), 85 (f32 LE) around a
byte string or a tag 56500 ``["bslz4", elem_size, bytes]`` / ``["lz4", 0, bytes]``. Compressed
bytes carry the HDF5 filter framing and are passed on as they are (direct chunk write).
Times are Rationals ``[num, den]`` (den = time base in Hz), converted to seconds.

Decoding is ``cbor2.loads`` without a tag hook (unknown tags come back as ``CBORTag``; measured
the fastest on cbor2 6), dates kept as text, then a walk over the few keys we need.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import cbor2
import numpy as np
from cbor2 import CBORTag

from stemdaq.errors import DecodeError
from stemdaq.models import Codec, DropReason, Frame, Rejected, SeriesEnd, SeriesStart, StreamEvent
from stemdaq.receiver.framing import check_bslz4, check_lz4_hdf5
from stemdaq.receiver.metadata import DTYPE_SIZES, SKIP, detector_info, integer, number, plain

MAGIC = b"\xd9\xd9\xf7"

#: RFC 8746 typed-array tag -> (numpy dtype name, bytes per element); little-endian / 8-bit only
TYPED_ARRAYS: dict[int, tuple[str, int]] = {
    64: ("uint8", 1),
    68: ("uint8", 1),  # clamped uint8
    69: ("uint16", 2),
    70: ("uint32", 4),
    72: ("int8", 1),
    77: ("int16", 2),
    78: ("int32", 4),
    85: ("float32", 4),
}
_ROW_MAJOR, _COL_MAJOR, _COMPRESSED = 40, 1040, 56500
_MAX_DIM = 1 << 16

# start-message key -> DetectorInfo field
_DETECTOR_KEYS = {
    "detector_description": "description",
    "detector_serial_number": "serial_number",
    "software_version": "software_version",
    "pixel_size_x": "pixel_size_x",
    "pixel_size_y": "pixel_size_y",
    "sensor_material": "sensor_material",
    "sensor_thickness": "sensor_thickness",
    "count_time": "count_time",
    "frame_time": "frame_time",
    "beam_center_x": "beam_center_x",
    "beam_center_y": "beam_center_y",
    "incident_energy": "incident_energy",
    "incident_wavelength": "incident_wavelength",
    "detector_distance": "detector_distance",  # Jungfraujoch
    "saturation_value": "saturation_value",
    "threshold_energy": "threshold_energy",
    "compression": "compression",
    "bit_depth_image": "bit_depth_image",
}
# the start fields that define the series (not copied to ``raw``) and the big ones (dropped)
_STRUCTURAL = {
    "type",
    "series_id",
    "series_unique_id",
    "number_of_images",
    "image_size_x",
    "image_size_y",
    "image_dtype",
    "channels",
}
_BIG = {"flatfield", "pixel_mask", "countrate_correction_lookup_table"}
#: other message types some senders add (Jungfraujoch); ignored, not rejected
IGNORED_TYPES = frozenset({"calibration", "metadata"})

try:
    _MAPS: tuple[type, ...] = (dict, cbor2.frozendict)  # cbor2 >= 6 decodes tag 55799 immutably
except AttributeError:  # pragma: no cover - cbor2 5
    _MAPS = (dict,)
_SEQS = (list, tuple)


def _keep(value: Any, immutable: bool = False) -> Any:
    return value


# Fallback decoding keeps DateTime (tag 0) and epoch time (tag 1) as sent: cbor2's own decoder
# fails the whole message on a date string it cannot parse, and every image has ``series_date``.
# The fast path (no semantic decoders) is ~1 us quicker per message.
_LOADS_KW: dict[str, Any] = {"semantic_decoders": {0: _keep, 1: _keep}}
try:
    cbor2.loads(b"\xc0\x61x", **_LOADS_KW)
except TypeError:  # pragma: no cover - cbor2 < 6 has no semantic_decoders argument
    _LOADS_KW = {}


def _rational(value: Any) -> float | None:
    """Rational ``[num, den]`` -> seconds; a plain number is taken as seconds."""
    if type(value) in _SEQS and len(value) == 2:
        num, den = value
        if type(num) is int and type(den) is int and den > 0:
            return num / den
        return None
    return number(value)


def decode_cbor(
    buf: bytes | memoryview, walk_blocks: bool, quirks: dict[str, int]
) -> list[StreamEvent]:
    """Decode one stream v2 message. Never raises."""
    try:
        msg = cbor2.loads(buf)
    except Exception as exc:  # CBORDecodeError, but also ValueError/OverflowError on odd input
        if not _LOADS_KW:
            return [Rejected(DropReason.MALFORMED, f"not valid CBOR: {exc}")]
        try:  # again, with dates kept as text (the fast path parses them)
            msg = cbor2.loads(buf, **_LOADS_KW)
        except Exception as exc2:
            return [Rejected(DropReason.MALFORMED, f"not valid CBOR: {exc2}")]
    if type(msg) is CBORTag and msg.tag == 55799:  # cbor2 builds without the built-in decoder
        msg = msg.value
    if not isinstance(msg, _MAPS):
        return [
            Rejected(DropReason.MALFORMED, f"CBOR message is a {type(msg).__name__}, not a map")
        ]
    msg = cast("Mapping[str, Any]", msg)
    kind = msg.get("type")
    if kind == "image":
        return _image(msg, walk_blocks)
    if kind == "start":
        return _start(msg)
    if kind == "end":
        series_id = integer(msg.get("series_id"))
        if series_id is None:
            return [Rejected(DropReason.MALFORMED, "end message without integer series_id")]
        return [SeriesEnd(series_id)]
    if kind in IGNORED_TYPES:
        quirks[f"ignored_type_{kind}"] = quirks.get(f"ignored_type_{kind}", 0) + 1
        return []
    return [Rejected(DropReason.MALFORMED, f"unknown stream v2 message type {kind!r:.40}")]


def _image(msg: Mapping[str, Any], walk_blocks: bool) -> list[StreamEvent]:
    series_id = msg.get("series_id")
    image_id = msg.get("image_id")
    if type(series_id) is not int or type(image_id) is not int:
        return [
            Rejected(
                DropReason.MALFORMED,
                "image message without integer series_id/image_id",
                integer(series_id),
                integer(image_id),
            )
        ]
    data = msg.get("data")
    if not isinstance(data, _MAPS) or not data:
        return [
            Rejected(DropReason.MALFORMED, "image message without data map", series_id, image_id)
        ]
    start_time = _rational(msg.get("start_time"))
    stop_time = _rational(msg.get("stop_time"))
    real_time = _rational(msg.get("real_time"))
    events: list[StreamEvent] = []
    for channel, mda in cast("Mapping[Any, Any]", data).items():
        try:
            shape, dtype, codec, payload = _array(mda, walk_blocks)
        except DecodeError as exc:
            events.append(
                Rejected(
                    DropReason(exc.reason),
                    f"channel {channel!r:.40}: {exc.detail}",
                    series_id,
                    image_id,
                )
            )
            continue
        if type(channel) is not str:
            events.append(
                Rejected(DropReason.MALFORMED, "channel name is not text", series_id, image_id)
            )
            continue
        events.append(
            Frame(
                series_id,
                image_id,
                channel,
                shape,
                dtype,
                codec,
                payload,
                start_time,
                stop_time,
                real_time,
            )
        )
    return events


def _array(mda: Any, walk_blocks: bool) -> tuple[tuple[int, int], str, Codec, bytes]:
    """MultiDimArray -> (shape, dtype, codec, payload); raises DecodeError."""
    if type(mda) is not CBORTag or mda.tag not in (_ROW_MAJOR, _COL_MAJOR):
        raise DecodeError("malformed", "image data is not a MultiDimArray (tag 40/1040)")
    value = mda.value
    if type(value) not in _SEQS or len(value) != 2:
        raise DecodeError("malformed", "MultiDimArray is not [dims, array]")
    dims, typed = value
    if type(dims) not in _SEQS or len(dims) != 2:
        raise DecodeError("malformed", f"image dims {plain(dims)!r:.60} are not [ny, nx]")
    ny, nx = dims
    if (
        type(ny) is not int
        or type(nx) is not int
        or not (0 < ny <= _MAX_DIM and 0 < nx <= _MAX_DIM)
    ):
        raise DecodeError("malformed", f"image dims {plain(dims)!r:.60} are not positive integers")
    if type(typed) is not CBORTag:
        raise DecodeError("malformed", "MultiDimArray data is not a typed array")
    kind = TYPED_ARRAYS.get(typed.tag)
    if kind is None:
        raise DecodeError("corrupt", f"unsupported typed array tag {typed.tag}")
    dtype, itemsize = kind
    nbytes = ny * nx * itemsize
    inner = typed.value
    if type(inner) is bytes:
        if len(inner) != nbytes:
            raise DecodeError(
                "corrupt", f"raw payload has {len(inner)} bytes, {ny}x{nx} {dtype} needs {nbytes}"
            )
        if mda.tag == _COL_MAJOR:  # element (i, j) at i + j*ny: transpose to row-major
            inner = (
                np.frombuffer(inner, dtype="<" + np.dtype(dtype).str[1:])
                .reshape(nx, ny)
                .T.tobytes()
            )
        return (ny, nx), dtype, Codec.RAW, inner
    if type(inner) is not CBORTag or inner.tag != _COMPRESSED:
        raise DecodeError("malformed", "typed array holds neither bytes nor tag 56500")
    comp = inner.value
    if type(comp) not in _SEQS or len(comp) != 3 or type(comp[2]) is not bytes:
        raise DecodeError("malformed", "tag 56500 is not [algorithm, elem_size, bytes]")
    if mda.tag == _COL_MAJOR:
        raise DecodeError("corrupt", "compressed column-major (tag 1040) arrays are not supported")
    algorithm, elem_size, payload = comp
    if algorithm == "bslz4":
        if elem_size != itemsize:
            raise DecodeError(
                "corrupt", f"bslz4 elem_size {plain(elem_size)!r:.20} does not match {dtype}"
            )
        check_bslz4(payload, nbytes, itemsize, walk_blocks)
        return (ny, nx), dtype, Codec.BSLZ4, payload
    if algorithm == "lz4":
        check_lz4_hdf5(payload, nbytes, walk_blocks)
        return (ny, nx), dtype, Codec.LZ4, payload
    raise DecodeError("corrupt", f"unsupported compression {plain(algorithm)!r:.40}")


def _start(msg: Mapping[str, Any]) -> list[StreamEvent]:
    series_id = integer(msg.get("series_id"))
    if series_id is None:
        return [Rejected(DropReason.MALFORMED, "start message without integer series_id")]
    size_x, size_y = integer(msg.get("image_size_x")), integer(msg.get("image_size_y"))
    frame_shape = (size_y, size_x) if size_x and size_y and size_x > 0 and size_y > 0 else None
    dtype = msg.get("image_dtype")
    dtype = dtype if isinstance(dtype, str) and dtype in DTYPE_SIZES else None
    channels = msg.get("channels")
    if (
        channels is not None
        and type(channels) in _SEQS
        and all(isinstance(c, str) for c in channels)
    ):
        channels = tuple(dict.fromkeys(channels))  # announced order, no repeats
    else:
        channels = ()
    n_images = integer(msg.get("number_of_images"))
    unique_id = msg.get("series_unique_id")
    raw: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for key, value in msg.items():
        if not isinstance(key, str) or key in _STRUCTURAL or key in _BIG:
            continue
        target = _DETECTOR_KEYS.get(key)
        if target is not None:
            fields[target] = (
                plain(value) if not isinstance(value, bool | int | float | str) else value
            )
            continue
        pv = plain(value)
        if pv is not SKIP:
            raw[key] = pv
    if dtype is not None and "bit_depth_image" not in fields:
        fields["bit_depth_image"] = DTYPE_SIZES[dtype] * 8
    fields = {k: v for k, v in fields.items() if v is not SKIP}
    info = detector_info(fields, raw)
    return [
        SeriesStart(
            series_id=series_id,
            protocol="stream2",
            unique_id=unique_id if isinstance(unique_id, str) else None,
            n_images=n_images if n_images is not None and n_images >= 0 else None,
            frame_shape=frame_shape,
            dtype=dtype,
            channels=channels,
            detector=info,
            raw=raw,
        )
    ]
