"""Series bookkeeping: which frames to write where, and why the others are not written.

:class:`SeriesTracker` consumes stream events in order. For each :class:`~stemdaq.models.Frame`
it answers a :class:`Placement` (flat row-major scan position, channel index) or ``None``
(dropped, counted by :class:`~stemdaq.models.DropReason`). Rules:

- only frames of the open series are placed; another series id -> ``WRONG_SERIES``; no series
  open (before the first start, after an end or :meth:`SeriesTracker.abort`) -> ``NO_SERIES``,
  so strays after an abort never reach the next series;
- frame id outside ``[0, n_positions)`` -> ``OUT_OF_RANGE``;
- shape/dtype other than announced by the start (or, if it did not say, than the series' first
  placed frame) -> ``WRONG_SHAPE``;
- second copy of a (position, channel) -> ``DUPLICATE`` (one byte per position and channel);
- with ``channel`` configured every other channel is ignored (``messages_ignored``, not a
  drop); otherwise channel indices follow the start's ``channels`` (a channel it did not
  announce -> ``UNKNOWN_CHANNEL``),
  or first-seen order when it announced none;
- a ``start`` while a series is open: with ``on_new_start="switch"`` (default) the open series is
  closed as *interrupted* (it never got its end) and the new one opens, which the return value
  says; with ``"ignore"`` the new start is counted as ignored and its frames as ``WRONG_SERIES``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from stemdaq.models import DropReason, Frame, Rejected, SeriesEnd, SeriesStart, StreamEvent

_NO_SERIES = DropReason.NO_SERIES.value
_WRONG_SERIES = DropReason.WRONG_SERIES.value
_OUT_OF_RANGE = DropReason.OUT_OF_RANGE.value
_WRONG_SHAPE = DropReason.WRONG_SHAPE.value
_DUPLICATE = DropReason.DUPLICATE.value
_UNKNOWN_CHANNEL = DropReason.UNKNOWN_CHANNEL.value


class Placement(NamedTuple):
    """Where a frame goes: flat row-major scan position and channel index."""

    position: int
    channel_index: int


_new_placement = tuple.__new__  # Placement(p, c) without the Python-level __new__ (~150 ns)


class SeriesOpened(NamedTuple):
    """A start opened a series; ``interrupted`` is the series it closed without an end."""

    series_id: int
    interrupted: int | None


class SeriesTracker:
    """Place frames of one series at a time on a ``scan_shape`` grid; count everything else.

    Parameters
    ----------
    scan_shape
        (rows, columns) of the scan; frame id ``i`` is row ``i // columns``.
    serpentine
        Odd rows run backwards (snake scan).
    channel
        Record only this channel; None: every channel.
    on_new_start
        What a start does while a series is open: ``"switch"`` to the new series (the open one is
        reported as interrupted) or ``"ignore"`` it (one series per tracker until end/abort).

    Not thread-safe: one receiver thread feeds it; :meth:`counters` may be read from others
    (plain ints and dict copies).
    """

    def __init__(
        self,
        scan_shape: tuple[int, int],
        serpentine: bool = False,
        channel: str | None = None,
        on_new_start: Literal["switch", "ignore"] = "switch",
    ) -> None:
        rows, cols = (int(v) for v in scan_shape)
        if rows < 1 or cols < 1:
            raise ValueError(f"scan_shape must be positive, got {scan_shape}")
        if on_new_start not in ("switch", "ignore"):
            raise ValueError(f"on_new_start must be 'switch' or 'ignore', got {on_new_start!r}")
        self.scan_shape = (rows, cols)
        self.n_positions = rows * cols
        self.serpentine = bool(serpentine)
        self.channel = channel
        self.on_new_start = on_new_start
        self.interrupted: list[int] = []  # series closed by a new start, never ended
        self._series: int | None = None
        self._open = False
        self._active: int | None = None  # the open series' id, None when none is open
        self._start: SeriesStart | None = None
        self._reset(None)
        self._received = 0
        self._bytes = 0
        self._ignored = 0
        self._dropped: dict[str, int] = {}

    def _reset(self, start: SeriesStart | None) -> None:
        self._shape = start.frame_shape if start else None
        self._dtype = start.dtype if start else None
        if self.channel is not None:
            names: tuple[str, ...] = (self.channel,)
            self._announced = True
        else:
            names = start.channels if start else ()
            self._announced = bool(names)
        self._channels: list[str] = list(names)
        self._index = {name: i for i, name in enumerate(names)}
        self._seen = [bytearray(self.n_positions) for _ in names]

    # -- properties ---------------------------------------------------------------------------

    @property
    def series_id(self) -> int | None:
        """Id of the open series, or of the last one once it is closed."""
        return self._series

    @property
    def is_open(self) -> bool:
        """A series is open: its frames are being placed."""
        return self._open

    @property
    def start(self) -> SeriesStart | None:
        """The start message of the open (or last) series."""
        return self._start

    @property
    def channels(self) -> tuple[str, ...]:
        """Recorded channels in channel-index order (configured, announced or first seen)."""
        return tuple(self._channels)

    @property
    def frame_shape(self) -> tuple[int, int] | None:
        """(ny, nx) of the series' frames, once known."""
        return self._shape

    @property
    def dtype(self) -> str | None:
        """Pixel dtype of the series' frames, once known."""
        return self._dtype

    @property
    def duplicates(self) -> int:
        """Duplicate frames seen (not placed)."""
        return self._dropped.get(_DUPLICATE, 0)

    # -- events -------------------------------------------------------------------------------

    def accept(self, event: StreamEvent) -> Placement | SeriesOpened | bool | None:
        """Consume one event; see :meth:`place`, :meth:`open`, :meth:`end`, :meth:`reject`."""
        if type(event) is Frame:
            return self.place(event)
        if type(event) is SeriesStart:
            return self.open(event)
        if type(event) is SeriesEnd:
            return self.end(event)
        if type(event) is Rejected:
            self.reject(event)
        return None

    def _drop(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def ignore(self, event: StreamEvent) -> None:
        """Count a message the caller chose not to act on (e.g. another detector's start)."""
        del event
        self._ignored += 1

    def place(self, frame: Frame) -> Placement | None:
        """Where to write ``frame``, or None if it is dropped (counted by reason).

        The common case (a frame of the open series, known channel, in range, expected shape, not
        seen before) is a handful of comparisons; everything else is sorted out in
        :meth:`_place_unusual`, in the order of the rules in the module docstring.
        """
        self._received += 1
        self._bytes += len(frame.payload)
        ci = self._index.get(frame.channel)
        fid = frame.frame_id
        if (
            frame.series_id != self._active
            or ci is None
            or not 0 <= fid < self.n_positions
            or frame.shape != self._shape
            or frame.dtype != self._dtype
        ):
            return self._place_unusual(frame)
        if self.serpentine:
            fid = self._snake(fid)
        seen = self._seen[ci]
        if seen[fid]:
            self._drop(_DUPLICATE)
            return None
        seen[fid] = 1
        return _new_placement(Placement, (fid, ci))

    def lane_seen(
        self, series_id: int, channel: str, shape: tuple[int, int], dtype: str
    ) -> bytearray | None:
        """The placed-positions array that :mod:`stemdaq.rank.lane` may place into: the open
        series is ``series_id``, ``channel`` is its one recorded channel and the frame is of its
        shape and dtype (what :meth:`place` checks per frame); None otherwise."""
        if (
            not self._open
            or self._active != series_id
            or self._channels != [channel]
            or self._shape != shape
            or self._dtype != dtype
        ):
            return None
        return self._seen[0]

    def add_received(self, frames: int, nbytes: int) -> None:
        """Count frames placed outside :meth:`place` (the in-order lane) and their bytes."""
        self._received += frames
        self._bytes += nbytes

    def _snake(self, fid: int) -> int:
        cols = self.scan_shape[1]
        row, col = divmod(fid, cols)
        return row * cols + (cols - 1 - col if row & 1 else col)

    def _place_unusual(self, frame: Frame) -> Placement | None:
        """:meth:`place` for a frame that is not of the open series' usual kind."""
        if not self._open:
            self._drop(_NO_SERIES)
            return None
        if frame.series_id != self._series:
            self._drop(_WRONG_SERIES)
            return None
        ci = self._index.get(frame.channel)
        if ci is None:
            if self.channel is not None:  # not recorded by choice: ignored, not lost
                self._ignored += 1
                return None
            if self._announced:
                self._drop(_UNKNOWN_CHANNEL)
                return None
            ci = len(self._channels)
            self._channels.append(frame.channel)
            self._index[frame.channel] = ci
            self._seen.append(bytearray(self.n_positions))
        fid = frame.frame_id
        if fid < 0 or fid >= self.n_positions:
            self._drop(_OUT_OF_RANGE)
            return None
        if frame.shape != self._shape or frame.dtype != self._dtype:
            if self._shape is None and self._dtype is None:
                self._shape, self._dtype = frame.shape, frame.dtype
            elif self._shape is None and frame.dtype == self._dtype:
                self._shape = frame.shape
            elif self._dtype is None and frame.shape == self._shape:
                self._dtype = frame.dtype
            else:
                self._drop(_WRONG_SHAPE)
                return None
        position = self._snake(fid) if self.serpentine else fid
        seen = self._seen[ci]
        if seen[position]:
            self._drop(_DUPLICATE)
            return None
        seen[position] = 1
        return Placement(position, ci)

    def open(self, start: SeriesStart) -> SeriesOpened | None:
        """A series starts; None if ignored (same series, or ``on_new_start='ignore'``)."""
        interrupted = None
        if self._open:
            if start.series_id == self._series or self.on_new_start == "ignore":
                self._ignored += 1
                return None
            interrupted = self._series
            if interrupted is not None:
                self.interrupted.append(interrupted)
        self._series = start.series_id
        self._open = True
        self._start = start
        self._reset(start)
        self._active = start.series_id
        return SeriesOpened(start.series_id, interrupted)

    def end(self, end: SeriesEnd) -> bool:
        """True if ``end`` closes the open series; an end of any other series is ignored."""
        if self._open and end.series_id == self._series:
            self._open = False
            self._active = None
            return True
        self._ignored += 1
        return False

    def reject(self, rejected: Rejected) -> None:
        """Count an event the decoder rejected.

        A rejected frame that says which series it belongs to is judged like any frame first: one
        of another series (or of none) is a stray, counted as such, not as damage to this one.
        """
        if rejected.frame_id is not None:
            self._received += 1
        if rejected.series_id is not None and (
            not self._open or rejected.series_id != self._series
        ):
            self._drop(_NO_SERIES if not self._open else _WRONG_SERIES)
            return
        self._drop(rejected.reason.value)

    def abort(self) -> int | None:
        """Close the open series without an end (e.g. aborted); its id, if one was open."""
        if not self._open:
            return None
        self._open = False
        self._active = None
        return self._series

    # -- accounting ---------------------------------------------------------------------------

    def placed_mask(self, channel_index: int = 0) -> np.ndarray:
        """Boolean view over scan positions placed so far for one channel (read-only use)."""
        if channel_index >= len(self._seen):
            return np.zeros(self.n_positions, dtype=bool)
        return np.frombuffer(self._seen[channel_index], dtype=bool)

    def missing(self) -> int:
        """Positions x channels of the current/last series not placed (gaps)."""
        n_channels = max(1, len(self._channels))
        return n_channels * self.n_positions - sum(seen.count(1) for seen in self._seen)

    def counters(self) -> dict[str, object]:
        """Receiver-side counters, with :class:`stemdaq.models.Counters` field names."""
        dropped = dict(self._dropped)
        return {
            "frames_expected": self.n_positions * max(1, len(self._channels)),
            "frames_received": self._received,
            "frames_dropped": sum(dropped.values()),
            "dropped": dropped,
            "messages_ignored": self._ignored,
            "bytes_received": self._bytes,
        }
