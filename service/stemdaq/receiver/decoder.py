"""One decoder for both DECTRIS stream formats, detected per message.

- stream v2 (CBOR): the first part starts with the self-describe magic ``d9 d9 f7`` or a CBOR
  map header (major type 5, bytes 0xa0-0xbf);
- stream v1 (JSON multipart): the first non-blank byte of the first part is ``{``.

:meth:`StreamDecoder.decode` never raises: whatever cannot be decoded becomes a
:class:`~stemdaq.models.Rejected` event with a :class:`~stemdaq.models.DropReason`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from stemdaq.errors import DecodeError
from stemdaq.models import DropReason, Rejected, StreamEvent
from stemdaq.receiver.stream1 import Stream1Decoder, looks_like_json, parse_json
from stemdaq.receiver.stream2 import MAGIC, decode_cbor

logger = logging.getLogger(__name__)


def as_view(part: Any) -> memoryview:
    """A zero-copy byte view of a message part (bytes, memoryview, zmq.Frame, buffer)."""
    if type(part) is memoryview:
        return part if part.format == "B" and part.ndim == 1 else part.cast("B")
    if type(part) is bytes:
        return memoryview(part)
    buffer = getattr(part, "buffer", None)  # zmq.Frame
    if buffer is not None:
        return buffer if buffer.format == "B" and buffer.ndim == 1 else buffer.cast("B")
    return memoryview(part).cast("B")


class StreamDecoder:
    """Decode ZeroMQ messages of DECTRIS stream v1 or v2 into stream events.

    Parameters
    ----------
    walk_blocks
        Check every compressed frame's block sizes against its length (a few hundred ns per
        8 KiB block; catches truncated and garbled payloads without decompressing). With False
        only the 12-byte header is checked.

    Attributes
    ----------
    quirks
        Counts of tolerated sender quirks, e.g. ``no_magic`` (v2 without tag 55799),
        ``split_header``, ``typo_end_htype``, ``extra_parts``.
    """

    def __init__(self, walk_blocks: bool = True) -> None:
        self.walk_blocks = walk_blocks
        self.quirks: dict[str, int] = {}
        self._v1 = Stream1Decoder(walk_blocks, self.quirks)

    def decode(self, parts: Sequence[Any]) -> list[StreamEvent]:
        """Decode one ZeroMQ message (all its parts) into events, in stream order."""
        try:
            return self._decode(parts)
        except Exception as exc:  # a bug or an input nobody foresaw: never kill the receiver
            logger.exception("stream message could not be decoded")
            return [
                Rejected(DropReason.MALFORMED, f"undecodable message: {type(exc).__name__}: {exc}")
            ]

    def _decode(self, parts: Sequence[Any]) -> list[StreamEvent]:
        if not parts:
            return [Rejected(DropReason.MALFORMED, "empty message")]
        first = as_view(parts[0])
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
            if first[:3] != MAGIC:
                self.quirks["no_magic"] = self.quirks.get("no_magic", 0) + 1
            if len(parts) > 1:
                self.quirks["extra_parts"] = self.quirks.get("extra_parts", 0) + 1
            return decode_cbor(first, self.walk_blocks, self.quirks)
        return [Rejected(DropReason.MALFORMED, f"neither CBOR nor JSON (first byte 0x{head:02x})")]
