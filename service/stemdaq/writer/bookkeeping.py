"""Which frames are in the file: per channel and scan position, kept in RAM, written at flush.

Per NXimage, ``<image>/frames`` (NXcollection) holds ``written`` [n_m, n_k] uint8, ``frame_id``
int64 (-1: none), ``start_time``, ``stop_time``, ``real_time`` float64 s (NaN: not given / not
written) and ``frames_written`` (scalar, what a SWMR reader polls). A frame is marked only once
its chunk is in the file, so the bookkeeping never claims a frame the file does not hold.

Marking is per frame on the data thread (the writer's hot path), so the values live in
``array.array`` buffers, which Python stores into at list speed, with numpy views over the same
memory for everything else (slices for :meth:`Bookkeeping.store`, the mask for readers): one
numpy scalar store costs ~0.1 us, an ``array.array`` one ~0.03 (five per frame).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from stemdaq.models import Frame
from stemdaq.writer import metadata as md

BOOKKEEPING = "frames"  # NXcollection inside each NXimage

#: bookkeeping datasets: name, dtype, fill value, units, long_name
_FIELDS: tuple[tuple[str, Any, Any, str, str], ...] = (
    ("written", np.uint8, 0, "", "1 where the frame of this scan position is in the file"),
    ("frame_id", np.int64, -1, "", "detector image number written here (-1: none)"),
    ("start_time", np.float64, np.nan, "s", "exposure start since the series arm (NaN: unknown)"),
    ("stop_time", np.float64, np.nan, "s", "exposure stop since the series arm (NaN: unknown)"),
    ("real_time", np.float64, np.nan, "s", "exposure duration (NaN: unknown)"),
)


def _filled(code: str, value: float, n: int) -> tuple[array, np.ndarray]:
    """An ``array.array`` of ``n`` values and a numpy view of it (the same memory)."""
    buf = array(code, [value]) * n
    return buf, np.frombuffer(buf, dtype=np.dtype(code))


class Bookkeeping:
    """Which frames are in the file, per channel and scan position (module docstring).

    ``written``, ``frame_id``, ``t_start``, ``t_stop`` and ``t_real`` are numpy arrays
    ``[n_channels, n_positions]`` for readers; :meth:`mark` and :meth:`mark_run` store into the
    ``array.array`` buffers under them.
    """

    def __init__(self, n_channels: int, scan_shape: tuple[int, int]) -> None:
        n_m, n_k = scan_shape
        self._n_m, self._n_k = n_m, n_k
        n_pos = n_m * n_k
        self._n_pos = n_pos
        n = n_channels * n_pos
        shape = (n_channels, n_pos)
        self._written = bytearray(n)
        self.written = np.frombuffer(self._written, dtype=np.uint8).reshape(shape)
        self._frame_id, frame_id = _filled("q", -1, n)
        self._t_start, t_start = _filled("d", np.nan, n)
        self._t_stop, t_stop = _filled("d", np.nan, n)
        self._t_real, t_real = _filled("d", np.nan, n)
        self.frame_id = frame_id.reshape(shape)
        self.t_start, self.t_stop, self.t_real = (
            t_start.reshape(shape),
            t_stop.reshape(shape),
            t_real.reshape(shape),
        )
        #: frames in the file, per channel and in all
        self.counts = [0] * n_channels
        self.count = 0
        #: frames marked since the last :meth:`store`
        self.since_store = 0
        self._lo, self._hi = n_pos, -1  # positions marked since the last store
        self._dsets: list[dict[str, h5py.Dataset]] = []

    def create(self, image: h5py.Group, channel: str) -> None:
        """Create the bookkeeping datasets of the next channel in ``image`` (before SWMR)."""
        coll = md.group(image, BOOKKEEPING, "NXcollection")
        md.put(coll, "channel", channel)
        out: dict[str, h5py.Dataset] = {}
        n_m, n_k = self._n_m, self._n_k
        chunks = (max(1, min(n_m, (1 << 16) // max(1, n_k))), n_k)
        for name, dtype, fill, units, doc in _FIELDS:
            ds = coll.create_dataset(
                name, shape=(n_m, n_k), dtype=dtype, chunks=chunks, fillvalue=fill
            )
            ds.attrs["units"] = units
            ds.attrs["long_name"] = doc
            out[name] = ds
        ds = coll.create_dataset("frames_written", data=np.int64(0))
        ds.attrs["long_name"] = "frames of this channel in the file (updated at each flush)"
        out["frames_written"] = ds
        self._dsets.append(out)

    def mark(self, channel: int, position: int, frame: Frame) -> None:
        """Record a frame now in the file."""
        self.mark_run(channel, position, (frame,))

    def mark_run(self, channel: int, position: int, frames: Sequence[Frame | None]) -> None:
        """Record ``frames[j]`` now in the file at ``position + j`` (None: nothing there)."""
        i = channel * self._n_pos + position
        written, new, last = self._written, 0, -1
        fid, t0, t1, tr = self._frame_id, self._t_start, self._t_stop, self._t_real
        for frame in frames:
            if frame is not None:
                if not written[i]:
                    written[i] = 1
                    new += 1
                fid[i] = frame.frame_id
                t = frame.start_time
                if t is not None:
                    t0[i] = t
                t = frame.stop_time
                if t is not None:
                    t1[i] = t
                t = frame.real_time
                if t is not None:
                    tr[i] = t
                self.since_store += 1
                last = i
            i += 1
        if last < 0:
            return
        if new:
            self.counts[channel] += new
            self.count += new
        last -= channel * self._n_pos
        if position < self._lo:
            self._lo = position
        if last > self._hi:
            self._hi = last

    def buffers(self) -> tuple[bytearray, array, array, array, array]:
        """``written``, ``frame_id``, start, stop and real time as the buffers :meth:`mark_run`
        stores into (for :mod:`stemdaq.rank.lane`, which marks in C and then calls
        :meth:`marked`)."""
        return self._written, self._frame_id, self._t_start, self._t_stop, self._t_real

    def marked(self, channel: int, position: int, n: int, new: int) -> None:
        """``n`` frames were marked from ``position`` in :meth:`buffers`, ``new`` of them
        not marked before: count them as :meth:`mark_run` does."""
        self.since_store += n
        if new:
            self.counts[channel] += new
            self.count += new
        if position < self._lo:
            self._lo = position
        if position + n - 1 > self._hi:
            self._hi = position + n - 1

    def store(self) -> None:
        """Write the scan rows that changed since the last store, and ``frames_written``."""
        if self._hi >= 0:
            n_k = self._n_k
            r0, r1 = self._lo // n_k, self._hi // n_k + 1
            a, b = r0 * n_k, r1 * n_k
            for ch, book in enumerate(self._dsets):
                for name, arr in (
                    ("written", self.written),
                    ("frame_id", self.frame_id),
                    ("start_time", self.t_start),
                    ("stop_time", self.t_stop),
                    ("real_time", self.t_real),
                ):
                    book[name][r0:r1] = arr[ch, a:b].reshape(r1 - r0, n_k)
                book["frames_written"][()] = self.counts[ch]
        self._lo, self._hi = self._n_pos, -1
        self.since_store = 0
