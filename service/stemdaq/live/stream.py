"""The WebSocket's binary updates: the scan rows that changed since a client's last update.

Message (little-endian): ``b"SDLV"``, ``u32`` length of a JSON header (padded with spaces to a
multiple of 4 bytes), the header, then float32 values ``[map, row, column]`` for the maps and
rows the header names (NaN: position not filled). Header keys: ``acquisition_id``,
``version``, ``full`` (the client must clear its images first), ``scan_shape``, ``maps``,
``rows``, ``filled``, ``positions``, ``detectors``, ``finished``.

Latest-only by construction: a client keeps no queue, only the version it last got; each
update is built from the maps as they are now, with every row changed since that version. A
slow client gets fewer, larger updates; it never holds up the acquisition (the maps are read
under their lock for a copy of the changed rows) nor the other clients (each has its own task).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

from stemdaq.live.hub import LiveSource
from stemdaq.live.maps import MAP_NAMES

MAGIC = b"SDLV"
_LEN = struct.Struct("<I")


@dataclass
class ClientCursor:
    """What one client has: the acquisition and the maps' version."""

    acq_id: str | None = None
    version: int = -1
    extra: dict[str, object] = field(default_factory=dict)


def next_update(source: LiveSource | None, cursor: ClientCursor) -> bytes | None:
    """The update that brings ``cursor`` to now, or None when nothing changed."""
    engine = source.engine if source is not None else None
    if source is None or engine is None:
        return None
    full = source.acq_id != cursor.acq_id
    since = -1 if full else cursor.version
    version, rows, data = engine.maps.rows_since(since)
    if not full and rows.size == 0 and cursor.extra.get("finished") == engine.finished:
        return None
    cursor.acq_id, cursor.version = source.acq_id, version
    cursor.extra["finished"] = engine.finished
    maps = engine.maps
    header = {
        "acquisition_id": source.acq_id,
        "version": version,
        "full": full,
        "scan_shape": list(maps.scan_shape),
        "maps": list(MAP_NAMES),
        "rows": rows.tolist(),
        "filled": maps.filled_count,
        "positions": maps.n_positions,
        "detectors": engine.detectors.as_dict(),
        "finished": engine.finished,
    }
    return encode(header, data)


def encode(header: dict[str, object], data: np.ndarray) -> bytes:
    """One message: magic, header length, JSON header (padded to 4 bytes), float32 data."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    return MAGIC + _LEN.pack(len(text)) + text + np.ascontiguousarray(data, "<f4").tobytes()


def decode(message: bytes) -> tuple[dict[str, object], np.ndarray]:
    """(header, data [map, row, column]) of a message (the tests' and Python clients' side)."""
    if message[:4] != MAGIC:
        raise ValueError("not a live-view message")
    (n,) = _LEN.unpack_from(message, 4)
    header = json.loads(message[8 : 8 + n])
    rows = header["rows"]
    n_k = header["scan_shape"][1]
    data = np.frombuffer(message[8 + n :], dtype="<f4").reshape(len(header["maps"]), len(rows), n_k)
    return header, data
