"""Series metadata from the stream: detector description fields and the remaining header fields.

Senders differ in what they announce and how well-typed it is, so nothing here raises: a field
that does not validate is left out of :class:`~stemdaq.models.DetectorInfo` and kept in ``raw``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from cbor2 import CBORTag
from pydantic import ValidationError

from stemdaq.models import DetectorInfo

#: numpy dtype name -> bytes per pixel, for every pixel type a frame may have
DTYPE_SIZES: dict[str, int] = {
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "float32": 4,
}

#: a sequence longer than this is a table or an image, not metadata: left out of ``raw``
MAX_RAW_ITEMS = 1024
#: a string longer than this is left out of ``raw``
MAX_RAW_TEXT = 65536


class _Skip:
    """Marker: this value does not belong in ``raw``."""


SKIP = _Skip()


def plain(value: Any, depth: int = 0) -> Any:
    """A JSON-friendly copy of a small metadata value, or :data:`SKIP` for blobs and arrays."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_RAW_TEXT else SKIP
    if depth > 16:
        return SKIP
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, CBORTag):
        # DateTime (0) and epoch time (1) are metadata; every other tag here is an array
        return plain(value.value, depth + 1) if value.tag in (0, 1) else SKIP
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            pv = plain(v, depth + 1)
            if pv is not SKIP:
                out[str(k)] = pv
        return out
    if isinstance(value, list | tuple):
        if len(value) > MAX_RAW_ITEMS:
            return SKIP
        items = [plain(v, depth + 1) for v in value]
        return SKIP if any(v is SKIP for v in items) else items
    return SKIP  # bytes, typed arrays, anything exotic


def detector_info(fields: dict[str, Any], raw: dict[str, Any]) -> DetectorInfo:
    """Build :class:`DetectorInfo`; fields that do not validate move to ``raw`` instead."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if "detector_distance" not in fields:  # stream v2 gives it as detector_translation[2], m
        translation = raw.get("detector_translation")
        if isinstance(translation, list | tuple) and len(translation) == 3:
            distance = number(translation[2])
            if distance is not None and distance > 0:
                fields["detector_distance"] = distance
    for _ in range(len(fields) + 1):
        try:
            return DetectorInfo(**fields)
        except ValidationError as exc:
            bad = {err["loc"][0] for err in exc.errors() if err.get("loc")}
            if not bad & fields.keys():
                break
            for key in bad & fields.keys():
                value = plain(fields.pop(str(key)))
                if value is not SKIP:
                    raw[f"invalid_{key}"] = value
    return DetectorInfo()


def number(value: Any) -> float | None:
    """A real number (not bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def integer(value: Any) -> int | None:
    """An int (not bool), else None."""
    return value if type(value) is int else None
