"""Stream v2 image messages read straight from the CBOR bytes (the per-frame fast path).

The images of a series differ only in their image id, start and stop times and payloads; the
rest of the message (series id, unique id, date, real time, channel layout, ...) is the same
bytes every time. :class:`FastImageDecoder` therefore reads the first image of a series with the
:data:`~stemdaq.receiver.v2layout.IMAGE` pattern (the usual layout, see
:mod:`stemdaq.receiver.v2layout`), keeps its series-constant sections as a *template*, and
reads every later image by comparing those sections (``bytes.startswith``, a memcmp) and decoding
the three integers in between. Payloads are zero-copy slices of the message.

Where stemdaq was built with its C extension, the usual image (sections as the template, the
usual bitshuffle-LZ4 payload header, blocks that walk to the payload's end) is read by one C
call, ``stemdaq._hotpath.image``; it returns None for anything else, and the Python lines below
it, the reference, read the message as they always did (tests run the decoders both ways).

Every check of the full decoder (:func:`stemdaq.receiver.stream2.decode_cbor`) is kept: dims,
typed-array tag, element size, payload size, and the walk over the compressed block table (for
the usual payload header its parameters are worked out once per series). Anything else (other
key order or types, unknown keys, non-ASCII text, column-major arrays, repeated channels,
trailing bytes, a payload that fails a check) makes :meth:`FastImageDecoder.decode` return None,
and the full decoder then decodes the message and says what is wrong with it. So the fast path
never accepts what the full decoder rejects, and what it accepts decodes to equal frames (tested
on every simulator format and on mutated and truncated messages).
"""

from __future__ import annotations

import struct
from typing import Any

from stemdaq.errors import DecodeError
from stemdaq.models import Codec, Frame, StreamEvent
from stemdaq.receiver.blockwalk import image as read_image
from stemdaq.receiver.blockwalk import walk as walk_blocks
from stemdaq.receiver.framing import check_bslz4, check_lz4_hdf5
from stemdaq.receiver.v2layout import (
    BYTES_LEN,
    IMAGE,
    NEXT_CHANNEL,
    TAIL,
    UINT_LEN,
    Channel,
    Fixed,
    Sections,
    read_channel,
    read_sections,
)

_HEADER = struct.Struct(">QI")
_BSLZ4, _LZ4, _RAW = Codec.BSLZ4, Codec.LZ4, Codec.RAW
_MAX_UINT_TOKENS = 3 * 9 + 5  # image id, start and stop numerators, payload length
# no walk plan learned yet: a "header" longer than any head copy, so ``startswith`` is False
_NO_HEADER = bytes(8192)
_UNKNOWN: Any = object()

#: how the usual image of a series reads in C: its layout, its payload (header and walk) and
#: what its sections say (:meth:`FastImageDecoder.usual`)
Usual = tuple[tuple[Any, ...], tuple[bytes, int, int, int], Sections]

#: template, image id, start and stop numerators, payload offset and size, and whether the
#: payload starts with the template's usual bslz4 header (so its walk plan applies)
_Read = tuple["_Template", int, int, int, int, int, bool]


class _Template:
    """What the images of one series share, as bytes and as values."""

    __slots__ = (
        "s1",
        "s2",
        "s3",
        "s4",
        "head",
        "sections",
        "simple",
        "payload_header",
        "plan",
        "fixed",
        "channels",
        "_layouts",
        "payload",
    )

    def __init__(self, s1: bytes, s2: bytes, s3: bytes, s4: bytes, sections: Sections) -> None:
        self.s1, self.s2, self.s3, self.s4 = s1, s2, s3, s4
        self.sections = sections
        # one channel, nothing after it, tag 55799 sent: the message ends with the payload
        self.simple = (
            sections.n_channels == 1
            and sections.n_keys == 9
            and not sections.user_data_first
            and sections.magic
        )
        # bytes to copy to read an image: the sections, the tokens between them, and the
        # first payload's 12-byte header
        self.head = len(s1) + len(s2) + len(s3) + len(s4) + _MAX_UINT_TOKENS + 12
        self.payload_header = _NO_HEADER  # the usual bslz4 header of the first channel ...
        self.plan = (0, 0, 0)  # ... and its walk: blocks, largest block size, leftover bytes
        self.payload: tuple[bytes, int, int, int] | None = None  # both, for the C read
        self.fixed: Fixed | None = None  # the layout of the last image read
        self._layouts: dict[tuple[int, int, int], Fixed] = {}
        self.channels: dict[bytes, Channel | None] = {}  # further channels, by token

    def use_lengths(self, lengths: tuple[int, int, int]) -> None:
        """Read the next images as if their three integers had these token lengths."""
        if min(lengths) < 2:  # the value is the header byte: no fixed layout
            self.fixed = None
            return
        fixed = self._layouts.get(lengths)
        if fixed is None:
            if len(self._layouts) > 16:
                self._layouts.clear()
            fixed = self._layouts[lengths] = Fixed(self.s1, self.s2, self.s3, self.s4, lengths)
        self.fixed = fixed

    def learn_payload(self, payload: memoryview) -> None:
        """Work out the block walk for payloads with this (checked) bslz4 header."""
        self.payload = payload_plan(payload, self.sections.first.itemsize)
        self.payload_header = self.payload[0]
        self.plan = self.payload[1:]


def payload_plan(payload: Any, itemsize: int) -> tuple[bytes, int, int, int]:
    """For payloads with this (checked) bitshuffle-LZ4 header: the header and its block walk
    (blocks, the largest block's size, leftover bytes), as ``stemdaq._hotpath.image`` and the
    lane take them."""
    orig, block = _HEADER.unpack_from(payload, 0)
    n_full, rest = divmod(orig, block)
    leftover = orig % (8 * itemsize)
    n_blocks = n_full if rest <= leftover else n_full + 1
    return bytes(payload[:12]), n_blocks, block + block // 255 + 16, leftover


def image_frame(
    sec: Sections, image_id: int, start_num: int, stop_num: int, payload: memoryview
) -> Frame:
    """The first channel's frame of an image read with the template's sections."""
    first = sec.first
    return Frame(
        sec.series_id,
        image_id,
        first.name,
        first.shape,
        first.dtype,
        first.codec,
        payload,
        start_num / sec.start_den if sec.start_den else None,
        stop_num / sec.stop_den if sec.stop_den else None,
        sec.real_time,
    )


class FastImageDecoder:
    """Decode stream v2 image messages in the usual layout; None for anything else.

    Parameters
    ----------
    walk_blocks
        As :class:`~stemdaq.receiver.decoder.StreamDecoder`: walk the compressed block table.
    quirks
        The decoder's quirk counts (``no_magic`` is counted here when the fast path decodes).
    """

    def __init__(self, walk_blocks: bool = True, quirks: dict[str, int] | None = None) -> None:
        self.walk_blocks = walk_blocks
        #: read the usual image in C (where built; it checks the walk, so only with it)
        self.read_in_c = walk_blocks and read_image is not None
        self.quirks: dict[str, int] = quirks if quirks is not None else {}
        self._template: _Template | None = None

    def usual(self) -> Usual | None:
        """How the last image read (and the next, if it is like it) reads in C: the layout and
        payload of ``stemdaq._hotpath.image``, and the sections. None where the C read does not
        run or apply: no template yet, an integer whose value is its header byte, no checked
        usual payload header, more than one channel or anything after the payload."""
        t = self._template
        if t is None or t.fixed is None or t.payload is None or not t.simple:
            return None
        if not self.read_in_c:
            return None
        return t.fixed.layout, t.payload, t.sections

    def decode(self, buf: memoryview) -> list[StreamEvent] | None:
        """The frames of one image message, or None: let the full decoder decide."""
        t = self._template
        got: _Read | None = None
        if t is not None and t.fixed is not None:  # the usual case: four memcmp, one unpack
            fx = t.fixed
            if t.payload is not None and self.read_in_c:
                r = read_image(buf, fx.layout, t.payload)  # type: ignore[misc]  # not None
                if r is not None:  # the usual image: sections, header and walk checked in C
                    image_id, start_num, stop_num, start, pos = r
                    frame = image_frame(t.sections, image_id, start_num, stop_num, buf[start:pos])
                    if pos == len(buf) and t.simple:
                        return [frame]
                    return self._rest(buf, t, frame, pos)
            h = buf[: fx.size].tobytes()
            p = fx.length_at
            if (
                h.startswith(fx.c1)
                and h.startswith(fx.c2, fx.o2)
                and h.startswith(fx.c3, fx.o3)
                and h.startswith(fx.c4, fx.o4)
                and p < len(h)
            ):
                n = BYTES_LEN[h[p]]
                if n:
                    image_id, start_num, stop_num = fx.unpack(h)
                    size = h[p] - 0x40 if n == 1 else int.from_bytes(h[p + 1 : p + n])
                    p += n
                    usual = h.startswith(t.payload_header, p)
                    got = (t, image_id, start_num, stop_num, p, size, usual)
        if got is None:
            got = None if t is None else _read(buf, t)
            if got is None:
                got = self._learn(buf)
                if got is None:
                    return None
        t, image_id, start_num, stop_num, pos, size, usual = got
        sec = t.sections
        end, walk = len(buf), self.walk_blocks
        start = pos
        pos += size
        if pos > end:
            return None
        first = sec.first
        payload = buf[start:pos]
        if usual and walk:
            n_iter, bound, leftover = t.plan  # the usual header: check_bslz4's walk, planned
            at = walk_blocks(buf, start + 12, n_iter, bound)
            if at < 0 or at + leftover != pos:
                return None
        elif not _check(payload, first, walk):
            return None
        elif first.codec is _BSLZ4 and walk:
            t.learn_payload(payload)
        frame = image_frame(sec, image_id, start_num, stop_num, payload)
        if pos == end and t.simple:
            return [frame]  # the usual message ends here
        return self._rest(buf, t, frame, pos)

    def _rest(
        self, buf: memoryview, t: _Template, frame: Frame, pos: int
    ) -> list[StreamEvent] | None:
        """The further channels of a message and what follows them (None: not as usual)."""
        sec, end = t.sections, len(buf)
        frames: list[StreamEvent] = [frame]
        names = {frame.channel}
        for _ in range(sec.n_channels - 1):
            c = NEXT_CHANNEL.match(buf, pos)
            if c is None:
                return None
            token = c.group(1)
            channel = t.channels.get(token, _UNKNOWN)
            if channel is _UNKNOWN:
                channel = t.channels[token] = read_channel(token)
            if channel is None or channel.name in names:
                return None  # a repeated channel: the full decoder keeps the last one
            start = c.end()
            pos = start + _length(c.group(2))
            payload = buf[start:pos]
            if pos > end or not _check(payload, channel, self.walk_blocks):
                return None
            names.add(channel.name)
            frames.append(
                Frame(
                    frame.series_id,
                    frame.frame_id,
                    channel.name,
                    channel.shape,
                    channel.dtype,
                    channel.codec,
                    payload,
                    frame.start_time,
                    frame.stop_time,
                    frame.real_time,
                )
            )
        n_keys = 10 if sec.user_data_first else 9
        if pos != end:  # only a user_data key may follow the data
            tail = TAIL.match(buf, pos)
            if sec.user_data_first or tail is None or tail.end() != end:
                return None
            n_keys = 10
        if n_keys != sec.n_keys:
            return None
        if not sec.magic:
            self.quirks["no_magic"] = self.quirks.get("no_magic", 0) + 1
        return frames

    def _learn(self, buf: memoryview) -> _Read | None:
        """Read an image with the full pattern; keep its sections as the series' template."""
        m = IMAGE.match(buf)
        if m is None:
            return None
        s1, image_tok, s2, start_tok, s3, stop_tok, s4, head = m.groups()
        sections = read_sections(s1, s2, s3, s4)
        if sections is None:
            return None
        t = self._template = _Template(s1, s2, s3, s4, sections)
        t.use_lengths((len(image_tok), len(start_tok), len(stop_tok)))
        return t, _uint(image_tok), _uint(start_tok), _uint(stop_tok), m.end(), _length(head), False


def _read(buf: memoryview, t: _Template) -> _Read | None:
    """Read an image of the template's series (see :data:`_Read`)."""
    h = buf[: t.head].tobytes()
    if not h.startswith(t.s1):
        return None
    try:
        p = len(t.s1)
        n = n1 = UINT_LEN[h[p]]
        if n == 0:
            return None
        image_id = h[p] if n == 1 else int.from_bytes(h[p + 1 : p + n])
        p += n
        if not h.startswith(t.s2, p):
            return None
        p += len(t.s2)
        n = n2 = UINT_LEN[h[p]]
        if n == 0:
            return None
        start_num = h[p] if n == 1 else int.from_bytes(h[p + 1 : p + n])
        p += n
        if not h.startswith(t.s3, p):
            return None
        p += len(t.s3)
        n = n3 = UINT_LEN[h[p]]
        if n == 0:
            return None
        stop_num = h[p] if n == 1 else int.from_bytes(h[p + 1 : p + n])
        p += n
        if not h.startswith(t.s4, p):
            return None
        p += len(t.s4)
        n = BYTES_LEN[h[p]]
        if n == 0:
            return None
        size = h[p] - 0x40 if n == 1 else int.from_bytes(h[p + 1 : p + n])
    except IndexError:  # the message ends inside the head
        return None
    p += n
    t.use_lengths((n1, n2, n3))
    return t, image_id, start_num, stop_num, p, size, h.startswith(t.payload_header, p)


def _uint(token: bytes) -> int:
    return token[0] if len(token) == 1 else int.from_bytes(token[1:])


def _length(head: bytes) -> int:
    return head[0] - 0x40 if len(head) == 1 else int.from_bytes(head[1:])


def _check(payload: memoryview, channel: Channel, walk: bool) -> bool:
    """The full decoder's payload checks; False where it would reject the frame."""
    try:
        if channel.codec is _BSLZ4:
            check_bslz4(payload, channel.nbytes, channel.itemsize, walk)
        elif channel.codec is _LZ4:
            check_lz4_hdf5(payload, channel.nbytes, walk)
        elif len(payload) != channel.nbytes:
            return False
    except DecodeError:
        return False
    return True
