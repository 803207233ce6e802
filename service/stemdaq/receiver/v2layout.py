"""The usual byte layout of a stream v2 image message, as regular expressions over CBOR.

A DECTRIS image message is always laid out the same way (dectris/documentation ``stream_v2``,
the captured EIGER2 sample, ``stemdaq.sim``)::

    d9 d9 f7                tag 55799 (optional: ansto-simplon-api omits it)
    a9 | aa                 map of 9 keys (10 with user_data)
      "type": "image", "series_id": uint, "series_unique_id": text, "image_id": uint,
      "real_time": [uint, uint], "series_date": tag0(text),
      "start_time": [uint, uint], "stop_time": [uint, uint],
      ("user_data": null | text | {},)        before or after "data"
      "data": {channel: tag40([[ny, nx], tag64..85( tag56500(["bslz4", esize, bytes])
                                                  | tag56500(["lz4", 0, bytes]) | bytes )])}

:data:`IMAGE` matches it up to the first payload's byte-string header. Its groups alternate
between what stays the same for a whole series (four *sections*, decoded once by
:func:`read_sections`) and what changes per image (image id, start and stop time numerators).
Text is printable ASCII (always valid UTF-8) with its length checked by the pattern itself.
:class:`Fixed` is the same layout at fixed offsets, once the integers' token lengths are known
(how :mod:`stemdaq.receiver.fast2` and the C read of ``stemdaq._hotpath`` see a usual image).
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from stemdaq.models import Codec

UINT = rb"(?:[\x00-\x17]|\x18.|\x19..|\x1a....|\x1b........)"
#: header byte -> length of an unsigned integer token (0: not one)
UINT_LEN = tuple(
    1 if b <= 0x17 else {0x18: 2, 0x19: 3, 0x1A: 5, 0x1B: 9}.get(b, 0) for b in range(256)
)
UINT_HEADER = {2: 0x18, 3: 0x19, 5: 0x1A, 9: 0x1B}  # integer token length -> header byte
UINT_CODE = {2: "B", 3: "H", 5: "I", 9: "Q"}  # ... -> struct code of its value
#: header byte -> length of a byte-string header (0: not a definite one of up to 2**32 bytes)
BYTES_LEN = tuple(
    1 if 0x40 <= b <= 0x57 else {0x58: 2, 0x59: 3, 0x5A: 5}.get(b, 0) for b in range(256)
)


def _ascii_text(max_len: int) -> bytes:
    short = b"|".join(bytes([0x60 + n]) + b"[\\x20-\\x7e]{%d}" % n for n in range(24))
    long = b"|".join(re.escape(bytes([n])) + b"[\\x20-\\x7e]{%d}" % n for n in range(24, max_len))
    return b"(?:" + short + b"|\\x78(?:" + long + b"))"


TEXT = _ascii_text(256)
USER_DATA = rb"\x69user_data(?:\xf6|\xa0|" + TEXT + rb")"
BYTES_HEAD = rb"(\x5a....|\x59..|\x58.|[\x40-\x57])"
# one channel: name, tag 40 [[ny, nx], tag <typed>( [tag 56500 [algorithm, esize,]] bytes
CHANNEL = (
    TEXT + rb"\xd8\x28\x82\x82" + UINT + UINT + rb"\xd8[\x40\x44-\x46\x48\x4d\x4e\x55]"
    rb"(?:\xd9\xdc\xb4\x83(?:\x65bslz4[\x01\x02\x04]|\x63lz4\x00))?"
)
#: groups: section 1, image id, section 2, start num, section 3, stop num, section 4, bytes head
IMAGE = re.compile(
    rb"((?:\xd9\xd9\xf7)?[\xa9\xaa]\x64type\x65image\x69series_id"
    + UINT
    + rb"\x70series_unique_id"
    + TEXT
    + rb"\x68image_id)"
    rb"(" + UINT + rb")"
    rb"(\x69real_time\x82" + UINT + UINT + rb"\x6bseries_date\xc0" + TEXT + rb"\x6astart_time\x82)"
    rb"(" + UINT + rb")"
    rb"(" + UINT + rb"\x69stop_time\x82)"
    rb"(" + UINT + rb")"
    rb"(" + UINT + rb"(?:" + USER_DATA + rb")?\x64data[\xa1-\xb7]" + CHANNEL + rb")" + BYTES_HEAD,
    re.DOTALL,
)
#: a further channel: groups channel token, bytes head
NEXT_CHANNEL = re.compile(b"(" + CHANNEL + b")" + BYTES_HEAD, re.DOTALL)
#: user_data after data
TAIL = re.compile(USER_DATA, re.DOTALL)

_SECTION_1 = re.compile(
    rb"(\xd9\xd9\xf7)?([\xa9\xaa])\x64type\x65image\x69series_id(" + UINT + b")", re.DOTALL
)
_SECTION_2 = re.compile(rb"\x69real_time\x82(" + UINT + rb")(" + UINT + b")", re.DOTALL)
_SECTION_4 = re.compile(
    b"(" + UINT + b")(" + USER_DATA + rb")?\x64data([\xa1-\xb7])(.*)", re.DOTALL
)
_CHANNEL_TOKEN = re.compile(
    rb"(" + TEXT + rb")\xd8\x28\x82\x82(" + UINT + rb")(" + UINT + rb")\xd8(.)"
    rb"(?:\xd9\xdc\xb4\x83(?:\x65bslz4(.)|(\x63lz4\x00)))?",
    re.DOTALL,
)
#: typed-array tag -> (dtype, itemsize), as :data:`stemdaq.receiver.stream2.TYPED_ARRAYS`
_TYPED = {
    0x40: ("uint8", 1),
    0x44: ("uint8", 1),
    0x45: ("uint16", 2),
    0x46: ("uint32", 4),
    0x48: ("int8", 1),
    0x4D: ("int16", 2),
    0x4E: ("int32", 4),
    0x55: ("float32", 4),
}
_MAX_DIM = 1 << 16
_MASK = (0, 0x1F, 0xFF, 0xFFFF, 0, 0xFFFFFFFF, 0, 0, 0, (1 << 64) - 1)


class Channel(NamedTuple):
    """One channel's layout: what every image of the series has in common."""

    name: str
    shape: tuple[int, int]
    dtype: str
    itemsize: int
    nbytes: int
    codec: Codec


class Sections(NamedTuple):
    """What the four series-constant sections of an image message say."""

    magic: bool
    n_keys: int  # the map's key count
    series_id: int
    real_time: float | None
    start_den: int
    stop_den: int
    user_data_first: bool  # user_data comes before data
    n_channels: int
    first: Channel


def uint(token: bytes) -> int:
    """Value of an unsigned CBOR integer token (header byte included)."""
    return int.from_bytes(token) & _MASK[len(token)]


def read_channel(token: bytes) -> Channel | None:
    """A channel token's layout, or None if the full decoder would refuse it."""
    m = _CHANNEL_TOKEN.fullmatch(token)
    if m is None:
        return None
    text, ny_tok, nx_tok, tag, esize, lz4 = m.groups()
    ny, nx = uint(ny_tok), uint(nx_tok)
    if not (0 < ny <= _MAX_DIM and 0 < nx <= _MAX_DIM):
        return None
    dtype, itemsize = _TYPED[tag[0]]
    if esize is not None:
        if esize[0] != itemsize:
            return None
        codec = Codec.BSLZ4
    else:
        codec = Codec.RAW if lz4 is None else Codec.LZ4
    name = text[1 if text[0] < 0x78 else 2 :].decode("ascii")
    return Channel(name, (ny, nx), dtype, itemsize, ny * nx * itemsize, codec)


def read_sections(s1: bytes, s2: bytes, s3: bytes, s4: bytes) -> Sections | None:
    """Decode the series-constant sections of an :data:`IMAGE` match (None: refuse)."""
    m1, m2, m4 = _SECTION_1.match(s1), _SECTION_2.match(s2), _SECTION_4.fullmatch(s4)
    if m1 is None or m2 is None or m4 is None:
        return None
    first = read_channel(m4.group(4))
    if first is None:
        return None
    den = uint(m2.group(2))
    return Sections(
        magic=m1.group(1) is not None,
        n_keys=m1.group(2)[0] - 0xA0,
        series_id=uint(m1.group(3)),
        real_time=uint(m2.group(1)) / den if den else None,
        start_den=uint(s3[: -len(b"\x69stop_time\x82")]),
        stop_den=uint(m4.group(1)),
        user_data_first=m4.group(2) is not None,
        n_channels=m4.group(3)[0] - 0xA0,
        first=first,
    )


class Fixed:
    """The head of an image whose integer tokens have given lengths: fixed offsets.

    Each section is compared together with the header byte of the integer after it, and the
    three integers are unpacked by one ``struct`` call.
    """

    __slots__ = (
        "c1",
        "c2",
        "c3",
        "c4",
        "o2",
        "o3",
        "o4",
        "length_at",
        "size",
        "unpack",
        "layout",
    )

    def __init__(
        self, s1: bytes, s2: bytes, s3: bytes, s4: bytes, lengths: tuple[int, int, int]
    ) -> None:
        headers = [bytes([UINT_HEADER[n]]) for n in lengths]
        self.c1, self.c2, self.c3, self.c4 = (
            s1 + headers[0],
            s2 + headers[1],
            s3 + headers[2],
            s4,
        )
        l1, l2, l3 = lengths
        self.o2 = len(s1) + l1
        self.o3 = self.o2 + len(s2) + l2
        self.o4 = self.o3 + len(s3) + l3
        self.length_at = self.o4 + len(s4)
        self.size = self.length_at + 5 + 12  # longest byte-string header, payload header
        skips = (len(s1) + 1, len(s2) + 1, len(s3) + 1)  # sections + header bytes
        fmt = ">" + "".join(
            f"{skip}x{UINT_CODE[n]}" for skip, n in zip(skips, lengths, strict=True)
        )
        self.unpack = struct.Struct(fmt).unpack_from
        # the same, for the C read (stemdaq._hotpath.image)
        self.layout = (
            self.c1,
            self.o2,
            self.c2,
            self.o3,
            self.c3,
            self.o4,
            self.c4,
            self.length_at,
            self.size,
        )
