"""Fault injection for the simulated detector: what a flaky network or DCU does to a series.

Faults are keyed by ``image_id`` (0-based, within each series) and apply to every series. Every
fault actually applied is appended to an :class:`Injection` log, so a test can assert exactly what
the receiver should have seen.

CLI syntax: ``drop=3,7;duplicate=5;reorder=10;corrupt=12;truncate=14;wrong_series=20;
malformed=22;abort_after=50;no_end``; ids may be ranges ``a-b`` (inclusive).

- ``drop``: the frame is never sent.
- ``duplicate``: the frame's message is sent twice in a row.
- ``reorder``: frame ``i`` is sent after frame ``i+1`` (swap), when ``i+1`` is in the same batch.
- ``corrupt``: the payload keeps its length but its framing is destroyed (first block size of
  the bslz4/lz4 framing, or the first LZ4 token, set to ``0xff``), so decoding fails; a raw payload
  gets 3 stray bytes appended (wrong length). Stream v1 keeps the hash/size of the good payload.
- ``truncate``: the payload is cut to half its length (v1 keeps the original ``size``/hash).
- ``wrong_series``: the frame is sent with series id ``series_id + WRONG_SERIES_OFFSET`` (and
  another unique id) *instead of* the right one: a gap in the series plus a stray message.
- ``malformed``: the message itself is not valid CBOR/JSON (first byte after the v2 magic
  replaced by a CBOR ``break``; v1 first part replaced by broken JSON).
- ``abort_after=N``: the series stops after image ids ``0..N-1``; no end message.
- ``no_end``: the end-of-series message is not sent.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

from stemdaq.errors import ConfigError

WRONG_SERIES_OFFSET = 1000
_ID_FAULTS = ("drop", "duplicate", "reorder", "corrupt", "truncate", "wrong_series", "malformed")


class Injection(NamedTuple):
    """One fault as applied: ``kind`` (a :class:`Faults` field name), series and image id."""

    kind: str
    series_id: int
    image_id: int | None


@dataclass(frozen=True)
class Faults:
    """Which frames of each series to mistreat (see the module docstring)."""

    drop: frozenset[int] = frozenset()
    duplicate: frozenset[int] = frozenset()
    reorder: frozenset[int] = frozenset()
    corrupt: frozenset[int] = frozenset()
    truncate: frozenset[int] = frozenset()
    wrong_series: frozenset[int] = frozenset()
    malformed: frozenset[int] = frozenset()
    abort_after: int | None = None
    no_end: bool = False

    @classmethod
    def parse(cls, spec: str | Faults | None) -> Faults:
        """Parse ``"drop=3,7;duplicate=5;...;abort_after=50;no_end"`` (``None``/"" = no faults)."""
        if spec is None:
            return cls()
        if isinstance(spec, Faults):
            return spec
        kwargs: dict[str, object] = {}
        for item in str(spec).replace(" ", "").split(";"):
            if not item:
                continue
            key, _, value = item.partition("=")
            if key in _ID_FAULTS:
                if not value:
                    raise ConfigError(f"fault {key!r} needs image ids, e.g. {key}=3,7")
                kwargs[key] = frozenset(_parse_ids(key, value))
            elif key == "abort_after":
                kwargs[key] = _parse_int(key, value)
            elif key == "no_end":
                if value not in ("", "1", "true", "True"):
                    raise ConfigError(f"no_end takes no value, got {value!r}")
                kwargs[key] = True
            else:
                raise ConfigError(
                    f"unknown fault {key!r}; known: {', '.join(_ID_FAULTS)}, abort_after, no_end"
                )
        return cls(**kwargs)  # type: ignore[arg-type]

    def __str__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, frozenset) and value:
                parts.append(f"{f.name}={','.join(str(i) for i in sorted(value))}")
        if self.abort_after is not None:
            parts.append(f"abort_after={self.abort_after}")
        if self.no_end:
            parts.append("no_end")
        return ";".join(parts)

    def __bool__(self) -> bool:
        return bool(str(self))

    def order(self, image_ids: list[int]) -> list[int]:
        """Send order of a batch of consecutive ids, with the ``reorder`` swaps applied."""
        ids = list(image_ids)
        pos = {i: n for n, i in enumerate(ids)}
        for i in sorted(self.reorder):
            if i in pos and i + 1 in pos:
                a, b = pos[i], pos[i + 1]
                ids[a], ids[b] = ids[b], ids[a]
                pos[i], pos[i + 1] = b, a
        return ids


@dataclass
class InjectionLog:
    """Thread-safe, append-only record of the faults applied."""

    entries: list[Injection] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, series_id: int, image_id: int | None = None) -> None:
        """Record one applied fault."""
        with self._lock:
            self.entries.append(Injection(kind, series_id, image_id))

    def snapshot(self) -> list[Injection]:
        """A copy of the entries so far."""
        with self._lock:
            return list(self.entries)


def corrupt_payload(payload: bytes, compression: str, bare_lz4: bool = False) -> bytes:
    """Same length, undecodable: destroy the first block size / LZ4 token (raw: +3 bytes)."""
    if compression == "none":
        return payload + b"\xde\xad\xbe"
    start = 0 if bare_lz4 else 12  # after the 12-byte HDF5-filter header
    buf = bytearray(payload)
    end = min(len(buf), start + 8)
    buf[start:end] = b"\xff" * (end - start)
    return bytes(buf)


def truncate_payload(payload: bytes) -> bytes:
    """Cut the payload to half its length (at least one byte shorter)."""
    return payload[: min(len(payload) - 1, len(payload) // 2)]


def _parse_ids(key: str, value: str) -> set[int]:
    ids: set[int] = set()
    for token in value.split(","):
        if "-" in token:
            lo, _, hi = token.partition("-")
            a, b = _parse_int(key, lo), _parse_int(key, hi)
            if b < a:
                raise ConfigError(f"fault {key}: empty range {token!r}")
            ids.update(range(a, b + 1))
        else:
            ids.add(_parse_int(key, token))
    return ids


def _parse_int(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"fault {key}: {value!r} is not an integer") from None
    if number < 0:
        raise ConfigError(f"fault {key}: {number} is negative")
    return number
