"""The summary's per-frame work: decompress a payload, add it to the sums, bit-exact.

Measured (CPU microseconds per frame, one core, bitshuffle-LZ4 chunks of synthetic diffraction
frames, see README "Dependencies"): ``dectris.compression.decompress`` decodes the HDF5-framed
chunk directly, about 4x faster than the ``bitshuffle`` wheel (192x192 uint16: 10 against 43 us;
512x512 uint16: 61 against 309 us). It is used when installed; :func:`stemdaq.writer.codecs.
decode_chunk` (``bitshuffle``, ``lz4``) is the fallback and the reference.

The reduction adds each frame to a narrow staging pattern (uint16 for uint8 frames, uint32 for
uint16 frames), moved into the uint64 pattern before it could overflow, and sums the frame's
total in uint32 blocks that cannot overflow: half the memory traffic of adding into uint64, so
about 1.7x as fast for uint8/uint16 frames (192x192 uint16: 14 against 23 us), and still exact.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from stemdaq.errors import DecodeError
from stemdaq.models import Codec
from stemdaq.writer.codecs import decode_chunk

try:  # DECTRIS' own decoder of the HDF5 bitshuffle-LZ4 / LZ4 framing (GIL released)
    from dectris.compression import decompress as _dectris_decompress  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the fallback is exercised by forcing it in the tests
    _dectris_decompress = None

_HEADER = struct.Struct(">Q")
_U32_MAX = (1 << 32) - 1
#: decoders :func:`make_decoder` can choose, fastest first
DECODERS = ("dectris", "bitshuffle")

Decoder = Callable[[Any], np.ndarray]
BatchDecoder = Callable[[list[Any]], np.ndarray | None]


def available_decoder(prefer: str | None = None) -> str:
    """The decoder to use: ``prefer`` when installed, else the fastest installed.

    Raises
    ------
    ValueError
        ``prefer`` is not one of :data:`DECODERS`.
    """
    if prefer is not None and prefer not in DECODERS:
        raise ValueError(f"unknown decoder {prefer!r}; one of {', '.join(DECODERS)}")
    if prefer == "bitshuffle" or _dectris_decompress is None:
        return "bitshuffle"
    return "dectris"


def make_decoder(
    codec: Codec, shape: tuple[int, int], dtype: np.dtype[Any], prefer: str | None = None
) -> Decoder:
    """A function payload -> array [ny, nx] for frames of ``codec``; raises on a corrupt payload.

    Parameters
    ----------
    codec
        How the frames are encoded.
    shape, dtype
        Of one frame.
    prefer
        ``"dectris"`` or ``"bitshuffle"``; default (or not installed): the fastest installed.
    """
    name = available_decoder(prefer)
    dt = np.dtype(dtype).newbyteorder("<")
    nbytes = int(shape[0]) * int(shape[1]) * dt.itemsize
    if codec is Codec.RAW:

        def raw(payload: Any) -> np.ndarray:
            if len(payload) != nbytes:
                raise DecodeError("corrupt", f"raw payload has {len(payload)} bytes, not {nbytes}")
            return np.frombuffer(payload, dtype=dt).reshape(shape)

        return raw
    if name == "dectris":
        algorithm, elem_size = codec.value, dt.itemsize
        unpack, decompress = _HEADER.unpack_from, _dectris_decompress

        def dectris(payload: Any) -> np.ndarray:
            # the header first: a corrupt size would make the decoder allocate it
            if len(payload) < 12 or unpack(payload, 0)[0] != nbytes:
                raise DecodeError("corrupt", f"{algorithm} header does not say {nbytes} bytes")
            out = decompress(payload, algorithm, elem_size=elem_size)
            return np.frombuffer(out, dtype=dt).reshape(shape)

        return dectris

    def reference(payload: Any) -> np.ndarray:
        return decode_chunk(payload, codec, shape, dt)

    return reference


_BLOCK = struct.Struct(">I")


def batch_decoder(
    codec: Codec, shape: tuple[int, int], dtype: np.dtype[Any], prefer: str | None = None
) -> BatchDecoder | None:
    """A function payloads -> array [B, ny, nx] decoding many frames in one call, or None.

    Beside a busy data thread every call that releases the GIL waits up to a switch interval
    (5 ms) to get it back, so the number of such calls per frame, not their CPU, bounds how
    many frames the summary thread reduces per second. One frame is whole 8 KiB bitshuffle
    blocks (192x192 uint16 is 9): the blocks of B frames, behind one header, are one
    bitshuffle-LZ4 stream, decoded by one ``dectris.compression`` call (as a K-frame chunk
    is); raw frames are joined into one buffer. The function returns None when a payload does
    not fit that form (then decode frame by frame); it raises on a corrupt payload.
    """
    name = available_decoder(prefer)
    dt = np.dtype(dtype).newbyteorder("<")
    nbytes = int(shape[0]) * int(shape[1]) * dt.itemsize
    if codec is Codec.RAW:

        def raw(payloads: list[Any]) -> np.ndarray | None:
            if any(len(p) != nbytes for p in payloads):
                return None
            joined = b"".join(payloads)
            return np.frombuffer(joined, dtype=dt).reshape(len(payloads), *shape)

        return raw
    if codec is not Codec.BSLZ4 or name != "dectris":
        return None
    unpack, decompress, elem = _HEADER.unpack_from, _dectris_decompress, dt.itemsize

    def bslz4(payloads: list[Any]) -> np.ndarray | None:
        first = payloads[0]
        if len(first) < 12:
            return None
        block = _BLOCK.unpack_from(first, 8)[0]
        if block <= 0 or nbytes % block:
            return None
        head = bytes(first[8:12])
        for p in payloads:
            if len(p) < 12 or unpack(p, 0)[0] != nbytes or bytes(p[8:12]) != head:
                return None
        joined = b"".join(
            [_HEADER.pack(nbytes * len(payloads)), head, *(memoryview(p)[12:] for p in payloads)]
        )
        out = decompress(joined, "bslz4", elem_size=elem)
        return np.frombuffer(out, dtype=dt).reshape(len(payloads), *shape)

    return bslz4


class Sums:
    """Summed pattern [ny, nx] and total per position, exact for integer frames.

    Parameters
    ----------
    n_positions
        Length of the total-intensity vector.
    frame_shape
        (ny, nx).
    dtype
        Frame dtype: unsigned frames sum in uint64, signed in int64, float in float64.
    """

    def __init__(self, n_positions: int, frame_shape: tuple[int, int], dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        kind = self.dtype.kind
        acc = np.float64 if kind == "f" else np.int64 if kind == "i" else np.uint64
        self.pattern = np.zeros(frame_shape, dtype=acc)
        self.image = np.zeros(n_positions, dtype=acc)
        size = int(frame_shape[0]) * int(frame_shape[1])
        self._stage: np.ndarray | None = None
        self._stage_room = 0  # frames the staging pattern takes before it must be moved
        self._stage_left = 0
        self._blocks: tuple[int, int] | None = None  # total summed in uint32 over these blocks
        if kind == "u" and self.dtype.itemsize <= 2:
            vmax = int(np.iinfo(self.dtype).max)
            stage = np.uint16 if self.dtype.itemsize == 1 else np.uint32
            self._stage = np.zeros(frame_shape, dtype=stage)
            self._stage_room = self._stage_left = int(np.iinfo(stage).max) // vmax
            block = _largest_divisor_at_most(size, _U32_MAX // vmax)
            if block >= 1024 or block == size:
                self._blocks = (size // block, block)

    def add(self, position: int, frame: np.ndarray) -> None:
        """Add one frame to the pattern and its total to ``image[position]``."""
        if self._stage is not None:
            np.add(self._stage, frame, out=self._stage)
            self._stage_left -= 1
            if self._stage_left == 0:
                self._move_stage(self._stage)
        else:
            np.add(self.pattern, frame, out=self.pattern)
        flat = frame.reshape(-1)
        if self._blocks is None:
            self.image[position] = np.add.reduce(flat, dtype=self.image.dtype)
        elif self._blocks[0] == 1:
            self.image[position] = np.add.reduce(flat, dtype=np.uint32)
        else:
            parts = np.add.reduce(flat.reshape(self._blocks), axis=1, dtype=np.uint32)
            self.image[position] = np.add.reduce(parts, dtype=np.uint64)

    def add_batch(self, positions: np.ndarray, frames: np.ndarray) -> None:
        """Add frames (B x ny x nx) at ``positions`` (B,): a few calls per batch, not per frame.

        Fewer calls matter beside a busy thread: each numpy call releases the GIL and may wait
        a switch interval (5 ms) to get it back.
        """
        b = frames.shape[0]
        if b == 0:
            return
        if self._stage is not None and b <= self._stage_room:
            if b > self._stage_left:
                self._move_stage(self._stage)
            np.add(self._stage, frames.sum(axis=0, dtype=self._stage.dtype), out=self._stage)
            self._stage_left -= b
            if self._stage_left == 0:
                self._move_stage(self._stage)
        else:
            if self._stage is not None and self._stage_left != self._stage_room:
                self._move_stage(self._stage)
            np.add(self.pattern, frames.sum(axis=0, dtype=self.pattern.dtype), out=self.pattern)
        self.image[positions] = frames.reshape(b, -1).sum(axis=1, dtype=self.image.dtype)

    def snapshot(self) -> np.ndarray:
        """The pattern so far (staged frames included), a float64 copy."""
        out = self.pattern.astype(np.float64)
        if self._stage is not None:
            out += self._stage
        return out

    def finish(self) -> np.ndarray:
        """Move what is staged into the pattern; return the pattern."""
        if self._stage is not None and self._stage_left != self._stage_room:
            self._move_stage(self._stage)
        return self.pattern

    def _move_stage(self, stage: np.ndarray) -> None:
        np.add(self.pattern, stage, out=self.pattern)
        stage.fill(0)
        self._stage_left = self._stage_room


def _largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (1 when none larger)."""
    if n <= limit:
        return n
    best = 1
    d = 1
    while d * d <= n:
        if n % d == 0:
            for c in (d, n // d):
                if best < c <= limit:
                    best = c
        d += 1
    return best
