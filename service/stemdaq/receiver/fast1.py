"""Stream v1 image messages in their usual layout, read without a JSON parser.

A DECTRIS v1 image is four parts (reference notes, section B.1)::

    {"htype": "dimage-1.0", "series": 1, "frame": 0, "hash": "<md5 hex>"}
    {"htype": "dimage_d-1.0", "shape": [nx, ny], "type": "uint16", "encoding": "bs16-lz4<",
     "size": 3604}
    <data>
    {"htype": "dconfig-1.0", "start_time": 0, "stop_time": 900000, "real_time": 900000}

:class:`FastImageDecoder1` matches the three JSON parts with compiled regular expressions (these
keys in this order, JSON whitespace, non-negative integers of up to 18 digits, short printable
ASCII strings without escapes) and decodes the rest as :class:`~stemdaq.receiver.stream1.
Stream1Decoder` does, with the same checks. It declines (returns None) for anything else: other
keys, order or htype version, big-endian encodings, a ``dconfig`` it cannot read, and any image
the full decoder would reject, which then decodes it and says why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

from stemdaq.errors import DecodeError
from stemdaq.models import Codec, Frame, StreamEvent
from stemdaq.receiver.fast2 import payload_plan
from stemdaq.receiver.framing import check_bslz4, lz4_hdf5_frame
from stemdaq.receiver.metadata import DTYPE_SIZES
from stemdaq.receiver.stream1 import V1_CHANNEL
from stemdaq.receiver.v1payload import check_md5

# Every piece is bounded, so a matching part is far below the full decoder's JSON size limit.
_WS = rb"[ \t\n\r]{0,64}"  # JSON whitespace
_SP = rb"\x20?"  # what encoders put there: json.dumps ", " / ": ", or nothing (compact)
_INT = rb"(0|[1-9][0-9]{0,17})"
_STR = rb'"([\x20\x21\x23-\x5b\x5d-\x7e]{0,256})"'  # printable ASCII, no quote/backslash


def _members(keys: tuple[tuple[bytes, bytes], ...], ws: bytes) -> bytes:
    return (ws + b"," + ws).join(
        b'"' + name + b'"' + ws + b":" + ws + value for name, value in keys
    )


def _object(keys: tuple[tuple[bytes, bytes], ...], last_optional: bool, ws: bytes) -> bytes:
    """``{key: value, ...}`` with these keys in this order; the last one may be left out."""
    body = _members(keys[:-1], ws) if last_optional else _members(keys, ws)
    if last_optional:
        body += b"(?:" + ws + b"," + ws + _members(keys[-1:], ws) + b")?"
    return rb"\{" + ws + body + ws + rb"\}"


class _Object:
    """A JSON object pattern: ``usual`` spacing (", ", ": " or none), and ``any`` spacing."""

    def __init__(self, *keys: tuple[bytes, bytes], last_optional: bool = False) -> None:
        self.usual = re.compile(_object(keys, last_optional, _SP) + rb"\Z").match
        self.any = re.compile(_WS + _object(keys, last_optional, _WS) + _WS + rb"\Z").match


_IMAGE = _Object(
    (b"htype", rb'"dimage-1\.0"'),
    (b"series", _INT),
    (b"frame", _INT),
    (b"hash", _STR),
    last_optional=True,
)
# "htype" to "encoding" stays the same for a series: one token (group 1), decoded once
_SHAPE = rb"\[" + _WS + _INT + _WS + b"," + _WS + _INT + _WS + rb"\]"
_DESCRIPTION_HEAD = (
    (b"htype", rb'"dimage_d-1\.0"'),
    (b"shape", _SHAPE),
    (b"type", _STR),
    (b"encoding", _STR),
)
_DESCRIPTION = _Object(
    (b"htype", b'("dimage_d-1\\.0"'),  # the token opens here ...
    *_DESCRIPTION_HEAD[1:3],
    (b"encoding", _STR + b")"),  # ... and closes here
    (b"size", _INT),
    last_optional=True,
)
_DESCRIPTION_TOKEN = re.compile(
    b'"dimage_d-1\\.0"' + _WS + b"," + _WS + _members(_DESCRIPTION_HEAD[1:], _WS) + rb"\Z"
)
_TIMES = _Object(
    (b"htype", rb'"dconfig-1\.0"'),
    (b"start_time", _INT),
    (b"stop_time", _INT),
    (b"real_time", _INT),
)
#: little-endian encodings and what they are passed on as; the others go to the full decoder
_ENCODINGS = {
    "<": Codec.RAW,
    "lz4<": Codec.LZ4,
    **{f"bs{bits}{dash}lz4<": Codec.BSLZ4 for bits in (8, 16, 32) for dash in ("", "-")},
}
_NS = 1e-9
_MAX_CACHED = 64
_BSLZ4, _LZ4, _RAW = Codec.BSLZ4, Codec.LZ4, Codec.RAW
_FAIL = object()
_T = TypeVar("_T")

#: an image description, from its token: shape (ny, nx), dtype, itemsize, bytes, codec
Description = tuple[tuple[int, int], str, int, int, Codec]
_JSON_WS = b" \t\n\r"
_INT_ITEM, _STR_ITEM = 1, 2  # a pattern's integer and string content (stemdaq/_v1.h)


class UsualV1(NamedTuple):
    """How the last usual v1 image reads in C (``stemdaq._lane``, ``arm_v1``): a pattern per
    JSON part (image header, data header, config or None), the payload's header and walk, the
    part count, and what the patterns keep constant."""

    patterns: tuple[Any, Any, Any]
    payload: tuple[bytes, int, int, int]
    n_parts: int
    series: int
    shape: tuple[int, int]
    dtype: str


def _pattern(part: Any, holes: list[tuple[tuple[int, int], int]]) -> tuple[Any, ...]:
    """The part's bytes as literals around its holes, (span, kind) each (an integer's literal
    before it loses its trailing whitespace: the C read allows up to 64 there, as fast1 does)."""
    buf = bytes(memoryview(part).cast("B"))
    out: list[Any] = []
    at = 0
    for (a, b), kind in holes:
        lit = buf[at:a]
        out += [lit.rstrip(_JSON_WS) if kind == _INT_ITEM else lit, kind]
        at = b
    out.append(buf[at:])
    return tuple(out)


def _description(token: bytes) -> Description | object:
    """Shape, dtype and codec of a ``dimage_d`` part (up to ``size``), or _FAIL."""
    m = _DESCRIPTION_TOKEN.match(token)
    if m is None:
        return _FAIL
    nx, ny = int(m.group(1)), int(m.group(2))
    dtype, encoding = m.group(3).decode(), m.group(4).decode()
    codec = _ENCODINGS.get(encoding)
    if codec is None or dtype not in DTYPE_SIZES or not (0 < nx <= 1 << 16 and 0 < ny <= 1 << 16):
        return _FAIL
    itemsize = DTYPE_SIZES[dtype]
    return (ny, nx), dtype, itemsize, ny * nx * itemsize, codec


class FastImageDecoder1:
    """Decode stream v1 image messages in the usual layout; None for anything else.

    Parameters
    ----------
    walk_blocks
        As :class:`~stemdaq.receiver.decoder.StreamDecoder`: walk the compressed block table.
    """

    def __init__(self, walk_blocks: bool = True) -> None:
        self.walk_blocks = walk_blocks
        # what stays the same for a series, decoded once: description token -> Description,
        # series digits -> series id, real_time digits -> seconds
        self._descriptions: dict[bytes, Any] = {}
        self._series: dict[bytes, int] = {}
        self._real_times: dict[bytes, float] = {}
        self._last: tuple[Any, ...] | None = None  # the last bitshuffle-LZ4 image's matches

    def usual(self) -> UsualV1 | None:
        """How the last image read (if bitshuffle-LZ4 and walked) reads in C, or None."""
        if self._last is None:
            return None
        m, d, t, parts, desc, series = self._last
        image_holes = [(m.span(2), _INT_ITEM)]
        if m.group(3) is not None:  # the hash
            image_holes.append((m.span(3), _STR_ITEM))
        image = _pattern(parts[0], image_holes)
        data = _pattern(parts[1], [(d.span(6), _INT_ITEM)] if d.group(6) is not None else [])
        config = None
        if t is not None:
            config = _pattern(parts[3], [(t.span(g), _INT_ITEM) for g in (1, 2, 3)])
        shape, dtype, itemsize = desc[0], desc[1], desc[2]
        payload = payload_plan(memoryview(parts[2]).cast("B"), itemsize)
        n_parts = 4 if t is not None else 3
        return UsualV1((image, data, config), payload, n_parts, series, shape, dtype)

    def decode(self, parts: Sequence[Any]) -> list[StreamEvent] | None:
        """The frame of one image message (parts: any byte buffers), or None."""
        n_parts = len(parts)
        if n_parts < 3:
            return None
        m = _IMAGE.usual(parts[0]) or _IMAGE.any(parts[0])
        d = _DESCRIPTION.usual(parts[1]) or _DESCRIPTION.any(parts[1])
        if m is None or d is None:
            return None
        token, size = d.group(1, 6)
        desc = self._descriptions.get(token)
        if desc is None:
            desc = _remember(self._descriptions, token, _description(token))
        if desc is _FAIL:
            return None
        shape, dtype, itemsize, nbytes, codec = desc
        blob = memoryview(parts[2])
        if blob.ndim != 1 or blob.format != "B":
            blob = blob.cast("B")
        if size is not None and int(size) != len(blob):
            return None
        times: tuple[float | None, ...] = (None, None, None)
        t = None
        if n_parts > 3:
            t = _TIMES.usual(parts[3]) or _TIMES.any(parts[3])
            if t is None:
                return None
            start, stop, real = t.groups()
            real_time = self._real_times.get(real)
            if real_time is None:
                real_time = _remember(self._real_times, real, int(real) * _NS)
            times = (int(start) * _NS, int(stop) * _NS, real_time)
        payload: Any = blob
        try:
            if codec is _BSLZ4:
                check_bslz4(blob, nbytes, itemsize, self.walk_blocks)
            elif codec is _RAW:
                if len(blob) != nbytes:
                    return None
            else:
                payload = lz4_hdf5_frame(blob, nbytes)
                hash_ = m.group(3)
                check_md5(blob, hash_.decode() if hash_ is not None else None)
        except DecodeError:
            return None
        series_digits, frame_id = m.group(1, 2)
        series = self._series.get(series_digits)
        if series is None:
            series = _remember(self._series, series_digits, int(series_digits))
        # what usual() needs, kept (not built) per image: the lane asks only now and then (it
        # keeps this one message, its data part included, until the next image)
        self._last = (
            (m, d, t, parts, desc, series) if codec is _BSLZ4 and self.walk_blocks else None
        )
        return [Frame(series, int(frame_id), V1_CHANNEL, shape, dtype, codec, payload, *times)]


def _remember(cache: dict[bytes, _T], token: bytes, value: _T) -> _T:
    """Keep a decoded token (a few per series; the cache is emptied when it grows)."""
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[token] = value
    return value
