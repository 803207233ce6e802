"""One decoder for both DECTRIS stream formats, detected per message.

- stream v2 (CBOR): the first part starts with the self-describe magic ``d9 d9 f7`` or a CBOR
  map header (major type 5, bytes 0xa0-0xbf);
- stream v1 (JSON multipart): the first non-blank byte of the first part is ``{``.

:meth:`StreamDecoder.decode` never raises: whatever cannot be decoded becomes a
:class:`~stemdaq.models.Rejected` event with a :class:`~stemdaq.models.DropReason`.

Image messages in the usual layout are read by the fast paths (:mod:`~stemdaq.receiver.fast2`
for v2, :mod:`~stemdaq.receiver.fast1` for v1: no CBOR/JSON tree, payloads as zero-copy views);
anything else, or anything they would not accept, goes to the full decoders
(:func:`~stemdaq.receiver.stream2.decode_cbor`, :class:`~stemdaq.receiver.stream1.
Stream1Decoder`), which stay the reference: the same message gives equal events either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from stemdaq.errors import DecodeError
from stemdaq.models import DropReason, Rejected, StreamEvent
from stemdaq.receiver.fast1 import FastImageDecoder1, UsualV1
from stemdaq.receiver.fast2 import FastImageDecoder, Usual
from stemdaq.receiver.stream1 import Stream1Decoder, looks_like_json, parse_json
from stemdaq.receiver.stream2 import MAGIC, decode_cbor

logger = logging.getLogger(__name__)


def as_view(part: Any) -> memoryview:
    """A zero-copy byte view of a message part (bytes, memoryview, zmq.Frame, buffer).

    The view keeps ``part`` alive (``view.obj``), so frames sliced from it stay valid.
    """
    view = memoryview(part)
    if view.ndim == 1 and view.format == "B":
        return view
    return view.cast("B")


class StreamDecoder:
    """Decode ZeroMQ messages of DECTRIS stream v1 or v2 into stream events.

    Parameters
    ----------
    walk_blocks
        Check every compressed frame's block sizes against its length (a few hundred ns per
        8 KiB block; catches truncated and garbled payloads without decompressing). With False
        only the 12-byte header is checked.
    fast
        Read images in the usual layout without a full parse (:mod:`~stemdaq.receiver.fast2`,
        :mod:`~stemdaq.receiver.fast1`); False: always the full decoders (the reference the
        tests compare the fast paths with).

    Attributes
    ----------
    quirks
        Counts of tolerated sender quirks, e.g. ``no_magic`` (v2 without tag 55799),
        ``split_header``, ``typo_end_htype``, ``extra_parts``.
    """

    def __init__(self, walk_blocks: bool = True, fast: bool = True) -> None:
        self.walk_blocks = walk_blocks
        self.quirks: dict[str, int] = {}
        self._v1 = Stream1Decoder(walk_blocks, self.quirks)
        self._fast1: Callable[[Sequence[Any]], list[StreamEvent] | None] = _decline
        self._fast2: Callable[[memoryview], list[StreamEvent] | None] = _decline
        self._fast1_decoder: FastImageDecoder1 | None = None
        self._fast2_decoder: FastImageDecoder | None = None
        #: the fast decoder that read the last message (None: the full decoders did)
        self._last_fast: FastImageDecoder | FastImageDecoder1 | None = None
        if fast:
            self._fast1_decoder = FastImageDecoder1(walk_blocks)
            self._fast1 = self._fast1_decoder.decode
            self._fast2_decoder = FastImageDecoder(walk_blocks, self.quirks)
            self._fast2 = self._fast2_decoder.decode

    def usual_image(self) -> Usual | UsualV1 | None:
        """How the next image would read as the last message did (for :mod:`stemdaq.rank.lane`),
        or None: the last message was not an image a fast decoder read, or a stream v1 header is
        being read in parts (its next message is no image)."""
        if self._last_fast is None or self._v1.in_split_header:
            return None
        return self._last_fast.usual()

    def decode(self, parts: Sequence[Any]) -> list[StreamEvent]:
        """Decode one ZeroMQ message (all its parts) into events, in stream order."""
        try:
            self._last_fast = None
            if len(parts) > 2 and not self._v1.in_split_header:  # a v1 image, usually
                frames = self._fast1(parts)
                if frames is not None:
                    self._last_fast = self._fast1_decoder
                    return frames
            if not parts:
                return [Rejected(DropReason.MALFORMED, "empty message")]
            return self._decode(as_view(parts[0]), parts)
        except Exception as exc:  # a bug or an input nobody foresaw: never kill the receiver
            return _undecodable(exc)

    def decode_part(self, part: Any) -> list[StreamEvent]:
        """Decode a message that came in one part (every stream v2 message); as :meth:`decode`.

        The data loop's call per message (:func:`~stemdaq.receiver.zmq_source.recv_message`
        gives a single part, or a list for :meth:`decode` when more parts follow). ``part`` is
        a ``zmq.Frame``, bytes or any byte buffer; frames keep zero-copy views of it.
        """
        try:
            first = memoryview(part)
            if first.ndim != 1 or first.format != "B":
                first = first.cast("B")
            self._last_fast = None
            if not self._v1.in_split_header:
                frames = self._fast2(first)
                if frames is not None:
                    self._last_fast = self._fast2_decoder
                    return frames
            return self._decode(first, (part,))
        except Exception as exc:
            return _undecodable(exc)

    def _decode(self, first: memoryview, parts: Sequence[Any]) -> list[StreamEvent]:
        if not first:
            return [Rejected(DropReason.MALFORMED, "empty first part")]
        v1 = self._v1
        head = first[0]
        if head == 0x7B or looks_like_json(first):
            views = [first] + [as_view(p) for p in parts[1:]]
            try:
                obj = parse_json(first)
            except DecodeError as exc:
                if v1.in_split_header:  # a blob of a split header that happens to start with '{'
                    return v1.header_blob()
                return [Rejected(DropReason.MALFORMED, exc.detail)]
            if not isinstance(obj, dict):
                if v1.in_split_header:
                    return v1.header_blob()
                return [
                    Rejected(
                        DropReason.MALFORMED,
                        f"JSON message is a {type(obj).__name__}, not an object",
                    )
                ]
            return v1.decode(views, obj)
        if v1.in_split_header:
            return v1.header_blob()
        if first[:3] == MAGIC or 0xA0 <= head <= 0xBF:
            if len(parts) > 1:
                self.quirks["extra_parts"] = self.quirks.get("extra_parts", 0) + 1
            else:
                frames = self._fast2(first)
                if frames is not None:
                    return frames
            if first[:3] != MAGIC:
                self.quirks["no_magic"] = self.quirks.get("no_magic", 0) + 1
            return decode_cbor(first, self.walk_blocks, self.quirks)
        return [Rejected(DropReason.MALFORMED, f"neither CBOR nor JSON (first byte 0x{head:02x})")]


def _decline(message: Any) -> None:
    """The fast path of a decoder built with ``fast=False``: always the full decoder."""
    del message


def _undecodable(exc: Exception) -> list[StreamEvent]:
    """A bug or an input nobody foresaw: logged, never raised into the receiver."""
    logger.exception("stream message could not be decoded")
    return [Rejected(DropReason.MALFORMED, f"undecodable message: {type(exc).__name__}: {exc}")]
