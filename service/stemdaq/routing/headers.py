"""Just enough of a stream message to route it: is it an image, and which image id.

The fan never decodes payloads, nor whole headers: a stream v2 image is CBOR whose first key is
``type`` ("image") and whose ``image_id`` follows within the first bytes; a stream v1 image's
first part is the JSON ``{"htype": "dimage-1.0", ..., "frame": N, ...}``. Everything that is not
recognisably an image (start, end, anything unusual) goes to every rank, whose full decoder
then accepts, ignores or counts it, so routing never loses a message it does not understand.
"""

from __future__ import annotations

import re

NOT_IMAGE = -1  # send to every rank
_V2_IMAGE = b"\x64type\x65image"  # CBOR text "type" -> text "image"
_V2_END = b"\x64type\x63end"
_V2_START = b"\x64type\x65start"
_V1_START = b'"dheader-'
_V2_ID = b"\x68image_id"  # CBOR text "image_id"
_HEAD = 96  # the type and the image id come first in DECTRIS' layout (and the simulator's)
_UINT_BYTES = {0x18: 1, 0x19: 2, 0x1A: 4, 0x1B: 8}
_V1_IMAGE = re.compile(rb'"htype"\s*:\s*"dimage-[^"]*".{0,200}?"frame"\s*:\s*(\d{1,19})', re.S)
_V1_END = b'"dseries_end-'


def v2_image_id(message: bytes | memoryview) -> int:
    """The image id of a stream v2 image message, or :data:`NOT_IMAGE`."""
    head = bytes(message[:_HEAD])
    if _V2_IMAGE not in head:
        return NOT_IMAGE
    at = head.find(_V2_ID)
    if at < 0 or at + 10 > len(head):
        return NOT_IMAGE
    value = _cbor_uint(head, at + len(_V2_ID))
    return NOT_IMAGE if value is None else value


_V2_SERIES = b"\x69series_id"  # CBOR text "series_id"
_V1_SERIES = re.compile(rb'"series"\s*:\s*(\d{1,19})')


def series_id(first_part: bytes | memoryview) -> int | None:
    """The series id a start or end message names (v2 ``series_id``, v1 ``series``), or None."""
    head = bytes(first_part[:_HEAD])
    at = head.find(_V2_SERIES)
    if at >= 0:
        return _cbor_uint(head, at + len(_V2_SERIES))
    m = _V1_SERIES.search(head)
    return int(m[1]) if m else None


def _cbor_uint(head: bytes, at: int) -> int | None:
    if at >= len(head):
        return None
    first = head[at]
    if first < 0x18:
        return first
    n = _UINT_BYTES.get(first)
    if n is None or at + 1 + n > len(head):
        return None
    return int.from_bytes(head[at + 1 : at + 1 + n], "big")


def v1_image_id(first_part: bytes | memoryview) -> int:
    """The frame number of a stream v1 image (``dimage-1.0`` header part), or NOT_IMAGE."""
    m = _V1_IMAGE.search(bytes(first_part[:512]))
    return int(m[1]) if m else NOT_IMAGE


def is_start(first_part: bytes | memoryview) -> bool:
    """True for a start-of-series message (v2 ``start``, v1 ``dheader``)."""
    head = bytes(first_part[:_HEAD])
    return _V2_START in head or _V1_START in head


def is_end(first_part: bytes | memoryview) -> bool:
    """True for an end-of-series message (v2 ``end``, v1 ``dseries_end``)."""
    head = bytes(first_part[:_HEAD])
    return _V2_END in head or _V1_END in head
