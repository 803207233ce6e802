"""A minimal decoder of the simulator's wire formats, written for the tests from the spec.

It does not import ``stemdaq.receiver``, so the simulator and the receiver are each checked
against the reference notes rather than against each other.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import bitshuffle
import cbor2
import lz4.block
import numpy as np
import zmq

MAGIC = b"\xd9\xd9\xf7"
TYPED = {64: "uint8", 69: "<u2", 70: "<u4", 85: "<f4"}


class Compressed:
    """A tag-56500 payload, kept raw so tests can look at the framing."""

    def __init__(self, algorithm: str, elem_size: int, data: bytes) -> None:
        self.algorithm, self.elem_size, self.data = algorithm, elem_size, data


def decode_bslz4(data: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """HDF5 bitshuffle framing: u64 BE nbytes, u32 BE block bytes, then the blocks."""
    nbytes, block_bytes = struct.unpack(">QI", data[:12])
    itemsize = np.dtype(dtype).itemsize
    assert nbytes == int(np.prod(shape)) * itemsize
    body = np.frombuffer(data, np.uint8, offset=12)
    return bitshuffle.decompress_lz4(body, shape, np.dtype(dtype), block_bytes // itemsize)


def decode_lz4_hdf5(data: bytes) -> bytes:
    """HDF5 LZ4 filter framing: u64 BE nbytes, u32 BE block bytes, per block u32 BE size + block."""
    nbytes, block = struct.unpack(">QI", data[:12])
    out, pos = [], 12
    while sum(len(b) for b in out) < nbytes:
        want = min(block, nbytes - sum(len(b) for b in out))
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        chunk = data[pos + 4 : pos + 4 + size]
        out.append(chunk if size == want else lz4.block.decompress(chunk, uncompressed_size=want))
        pos += 4 + size
    assert pos == len(data)
    return b"".join(out)


def _tag_hook(*args: Any) -> Any:
    # cbor2 documents (decoder, tag); cbor2 6.3's C decoder passes (tag, immutable): find the tag
    tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
    if tag.tag == 56500:
        return Compressed(*tag.value)
    if tag.tag in TYPED:
        return ("typed", TYPED[tag.tag], tag.value)
    if tag.tag == 40:
        dims, (_, dtype, body) = tag.value
        shape = tuple(dims)
        if isinstance(body, Compressed):
            if body.algorithm == "bslz4":
                assert body.elem_size == np.dtype(dtype).itemsize
                return decode_bslz4(body.data, dtype, shape)
            assert body.algorithm == "lz4" and body.elem_size == 0
            return np.frombuffer(decode_lz4_hdf5(body.data), dtype).reshape(shape)
        return np.frombuffer(body, dtype).reshape(shape)
    return tag


def decode_v2(message: bytes) -> dict[str, Any]:
    """One stream v2 message -> dict (arrays decoded); checks the magic and the first key."""
    assert message[:3] == MAGIC
    obj = cbor2.loads(message, tag_hook=_tag_hook)
    assert next(iter(obj)) == "type"
    return dict(obj)


def decode_v1_image(parts: list[bytes]) -> tuple[dict[str, Any], np.ndarray]:
    """One stream v1 image message -> (dimage header, frame); checks hash and size."""
    head, desc, blob, times = (
        json.loads(parts[0]),
        json.loads(parts[1]),
        parts[2],
        json.loads(parts[3]),
    )
    assert head["htype"] == "dimage-1.0" and desc["htype"] == "dimage_d-1.0"
    assert times["htype"] == "dconfig-1.0"
    assert head["hash"] == hashlib.md5(blob).hexdigest()
    assert desc["size"] == len(blob)
    nx, ny = desc["shape"]
    dtype = np.dtype(desc["type"]).newbyteorder("<")
    enc = desc["encoding"]
    if enc == "<":
        raw = blob
    elif enc == "lz4<":
        raw = lz4.block.decompress(blob, uncompressed_size=nx * ny * dtype.itemsize)
    else:
        assert enc == f"bs{8 * dtype.itemsize}-lz4<"
        return head, decode_bslz4(blob, desc["type"], (ny, nx))
    return head, np.frombuffer(raw, dtype).reshape(ny, nx)


def _is_v2_end(message: bytes) -> bool:
    try:
        return decode_v2(message)["type"] == "end"
    except Exception:  # noqa: BLE001 - a corrupt frame on purpose
        return False


class Puller:
    """A PULL socket connected to a simulator's stream."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def recv(self, timeout: float = 5.0) -> list[bytes] | None:
        """One message, or None after ``timeout`` seconds."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return self.sock.recv_multipart()

    def until_end(self, timeout: float = 10.0, v2: bool = True) -> list[list[bytes]]:
        """Messages up to and including the end message (or until silent for ``timeout``)."""
        out = []
        while (msg := self.recv(timeout)) is not None:
            out.append(msg)
            if v2 and _is_v2_end(msg[0]):
                break
            if not v2 and b"dseries_end-1.0" in msg[0][:40]:
                break
        return out

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()
