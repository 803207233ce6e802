"""Summed diffraction pattern, total-intensity image and the live view, off the hot path.

Pre-compressed frames must be decompressed to be summed. :class:`SummaryAccumulator` does that
in its own thread, fed through a bounded queue that the data thread never waits on: on a small
machine a summary that takes all the CPU it can get slows writing down (measured: 27k -> 12k
frames/s on 2 cores).

The budget is measured, not assumed: the summary thread reads its own CPU clock
(``time.thread_time``) and compares it with ``cpu_share`` x the wall time since the start. From
the offer rate and its measured cost per frame it picks the finest scan grid it can afford
(every position, else every 2nd row and column, every 4th, ... every 16th), so a subsampled
total-intensity image is a whole, coarser picture rather than one with arbitrary holes. If it
still runs ahead of its budget by more than ``SLACK_S`` CPU seconds it takes no frames until it
is back within. :meth:`SummaryAccumulator.offer` only reads that decision: no clock, no lock.
The ``included`` mask says which positions are in the sums.

The same frames feed the live view, in batches of up to :data:`BATCH` frames: the sums, the
maps and their geometry are :class:`~stemdaq.writer.summary_reduce.SummaryReduction`'s
(``writer/summary_reduce.py``); this module decides which frames reach it, and when.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.live.geometry import Detectors, DetectorsRequest
from stemdaq.models import Codec, Frame
from stemdaq.threadnames import named
from stemdaq.writer.summary_budget import (
    COARSEST,
    GRID_STEPS,
    PAUSED,
    WINDOW_S,
    Plan,
    choose_grid,
    grid_classes,
    log_grid_change,
)
from stemdaq.writer.summary_decode import (
    BatchDecoder,
    Decoder,
    available_decoder,
    batch_decoder,
    make_decoder,
)
from stemdaq.writer.summary_reduce import SummaryReduction

logger = logging.getLogger(__name__)

__all__ = ["BATCH", "SummaryAccumulator"]

_IDLE_WAIT_S = 0.05  # longest sleep without an offer
#: frames reduced together by the live view's matrix product
BATCH = 32
#: bytes a batch may take decoded and as float32 (1024x1024 uint32 frames: batches of 2)
BATCH_BYTES = 16 << 20


def batch_frames(frame_shape: tuple[int, int], dtype: np.dtype) -> int:
    """Frames per batch: :data:`BATCH`, fewer where the frames are large (memory bound)."""
    per_frame = frame_shape[0] * frame_shape[1] * (np.dtype(dtype).itemsize + 4)
    return max(1, min(BATCH, BATCH_BYTES // max(1, per_frame)))


#: longest wait for a batch to fill (small batches cost more per frame: numpy call overheads)
_BATCH_WAIT_S = 0.02


class SummaryAccumulator:
    """Sum frames of one channel into a pattern [ny, nx] and an image [n_m, n_k].

    Parameters
    ----------
    scan_shape
        (n_m, n_k); position ``p`` is row ``p // n_k``, column ``p % n_k``.
    frame_shape
        (ny, nx).
    dtype
        Frame dtype; integer frames are summed exactly (uint64 / int64), float in float64.
    max_queue
        Frames waiting to be summed; beyond that :meth:`offer` skips frames.
    channel
        Channel to sum; default: the first channel offered.
    cpu_share
        CPU time the summary thread may use, as a fraction of one core (>= 1: no limit).
    decoder
        ``"dectris"`` or ``"bitshuffle"``; default (or not installed): the fastest installed.
    config
        The acquisition's config: the live view's geometry (``live_*``, the calibration's
        ``beam_center``).
    """

    def __init__(
        self,
        scan_shape: tuple[int, int],
        frame_shape: tuple[int, int],
        dtype: str,
        max_queue: int = 64,
        *,
        channel: str | None = None,
        cpu_share: float = 0.1,
        decoder: str | None = None,
        config: AcquisitionConfig | None = None,
    ) -> None:
        self.scan_shape = (int(scan_shape[0]), int(scan_shape[1]))
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.dtype = np.dtype(dtype)
        self._n_pos = self.scan_shape[0] * self.scan_shape[1]
        self._grid, self._fraction = grid_classes(self.scan_shape)
        self._channel = channel
        self._share = float(cpu_share)
        self._decoder_name = available_decoder(decoder)
        self._decoders: dict[Codec, Decoder] = {}
        self._batch_decoders: dict[Codec, BatchDecoder | None] = {}
        # queue: appended by the data thread, popped by the summary thread (both atomic)
        self._queue: deque[tuple[int, Frame]] = deque()
        self._wake = threading.Event()
        self._waiting = False  # the summary thread sleeps on _wake
        self._closing = False
        self._min_class = 0  # offers are taken when their grid class is >= this
        # counters: each written by one thread only
        self.offered = 0
        self.skipped = 0
        self.failed = 0
        self._cpu = 0.0
        self._t0 = time.monotonic()
        self._t_end: float | None = None
        self._result: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.batch_n = batch_frames(self.frame_shape, self.dtype)
        self._reduction = SummaryReduction(
            self.scan_shape, self.frame_shape, self.dtype, self.batch_n, config
        )
        self._mask = self._reduction.mask  # 1 where the position is in the sums
        self.maps = self._reduction.maps
        # queued frames are summed at finish() even when the budget is spent: at most two
        # batches (1024x1024 uint32: 4 frames, not 64 that took 0.6 s to drain at close)
        self._max_queue = max(1, min(int(max_queue), 2 * self.batch_n))
        self._frames = np.empty((self.batch_n, *self.frame_shape), dtype=self.dtype)
        self._thread = named(self._run, name="stemdaq-summary")
        self._thread.start()

    # -- what the control side reads --------------------------------------------------------

    @property
    def included(self) -> int:
        """Frames summed so far."""
        return self._reduction.included

    @property
    def channel(self) -> str | None:
        """The channel being summed (None until the first frame)."""
        return self._channel

    @property
    def cpu_seconds(self) -> float:
        """CPU time the summary thread used (its own clock), updated every few ms."""
        return self._cpu

    @property
    def wall_seconds(self) -> float:
        """Wall time since the accumulator started (until :meth:`finish`)."""
        return (self._t_end or time.monotonic()) - self._t0

    @property
    def grid_step(self) -> int:
        """Frames now taken from every ``grid_step``-th row and column; 0: none (over budget)."""
        return 0 if self._min_class >= PAUSED else GRID_STEPS[self._min_class]

    @property
    def decoder(self) -> str:
        """The decoder used for compressed frames (``dectris`` or ``bitshuffle``)."""
        return self._decoder_name

    @property
    def detectors(self) -> Detectors:
        """The virtual detectors in use."""
        return self.maps.detectors

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` ran (the maps change no more, except by a completion)."""
        return self._result is not None

    def sum_pattern(self) -> np.ndarray:
        """A copy of the summed pattern so far, float64 [ny, nx]."""
        return self._reduction.sum_pattern()

    def set_detectors(self, change: DetectorsRequest) -> Detectors:
        """Change the geometry (values not given stay); recompute the maps.

        Raises
        ------
        ConfigError
            The geometry does not fit the frame, or the annulus is empty.
        """
        return self._reduction.set_detectors(change)

    # -- the data thread --------------------------------------------------------------------

    def lane_grid(self, channel: str) -> bytes | None:
        """Per position its grid class, for :mod:`stemdaq.rank.lane` (it offers the frames of
        a class >= :attr:`min_class` and counts the others with :meth:`count_unwanted`); None
        when this summary sums another channel."""
        return self._grid if self._channel in (None, channel) else None

    @property
    def min_class(self) -> int:
        """Offers of a grid class below this are skipped (the budget's choice)."""
        return self._min_class

    def count_unwanted(self, n: int) -> None:
        """``n`` frames were offered elsewhere and skipped for their grid class (the lane)."""
        self.offered += n
        self.skipped += n

    def offer(self, position: int, frame: Frame) -> bool:
        """Queue a frame for summing; never blocks. False when skipped (or another channel).

        The frame is queued by reference: its payload is not copied.
        """
        if self._channel is None:
            self._channel = frame.channel
        elif frame.channel != self._channel:
            return False
        if self._closing or not 0 <= position < self._n_pos:
            return False
        self.offered += 1
        cls, n = self._grid[position], len(self._queue)
        # a full queue refuses the finer grids' frames; the overview grid's (every 16th row and
        # column: 1/256 of the positions) get up to max_queue more places, so that the overview
        # stays whole while the budget is still being measured (seen: a scan's row 16 missing)
        if cls < self._min_class or (
            n >= self._max_queue and (cls < COARSEST or n >= 2 * self._max_queue)
        ):
            self.skipped += 1
            return False
        queue = self._queue
        queue.append((position, frame))
        if self._waiting and (len(queue) == 1 or len(queue) >= self.batch_n):
            self._wake.set()
        return True

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stop the thread; return (sum_pattern [ny, nx], total_image [n_m, n_k], included mask).

        Frames still queued are summed first. Idempotent.
        """
        if self._result is None:
            self._closing = True
            self._wake.set()
            self._thread.join()
            self._t_end = time.monotonic()
            self._result = self._reduction.result()
        return self._result

    def missing(self) -> np.ndarray:
        """Positions not in the sums, row-major (after :meth:`finish`: for a completion)."""
        return self._reduction.missing()

    def complete(
        self, positions: np.ndarray, frames: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add decoded frames (B x ny x nx) read back from the file, after :meth:`finish`.

        Returns the new (pattern, total image, included mask), as :meth:`finish` does.
        """
        if self._result is None:
            raise RuntimeError("complete() is for after finish()")
        self._reduction.complete(positions, frames)
        self._result = self._reduction.result()
        return self._result

    # -- the summary thread -----------------------------------------------------------------

    def _run(self) -> None:
        cpu0 = time.thread_time()
        plan = Plan(self._t0)
        try:
            since: float | None = None  # when the oldest waiting frame was seen
            while True:
                n = len(self._queue)
                now = time.monotonic()
                if n and since is None:
                    since = now
                if n >= self.batch_n or (n and (self._closing or now - since >= _BATCH_WAIT_S)):  # type: ignore[operator]
                    self._sum(self._take(), plan)
                    since = None
                elif self._closing:
                    return
                else:
                    self._sleep(_BATCH_WAIT_S if n else _IDLE_WAIT_S)
                now = time.monotonic()
                if now - plan.t >= WINDOW_S:
                    self._cpu = time.thread_time() - cpu0
                    self._choose_grid(plan, now)
        except Exception:  # never let finish() wait on a dead thread's frames
            logger.exception("summary thread failed; the sums stop at %d frames", self.included)
        finally:
            self._cpu = time.thread_time() - cpu0

    def _sleep(self, timeout: float) -> None:
        """Wait for a batch (or the next budget check); the data thread wakes us at the first
        frame and at a full batch, not at every frame."""
        self._wake.clear()
        self._waiting = True
        if len(self._queue) < self.batch_n and not self._closing:
            self._wake.wait(timeout)
        self._waiting = False

    def _take(self) -> list[tuple[int, Frame]]:
        """Up to :attr:`batch_n` queued frames."""
        out: list[tuple[int, Frame]] = []
        pop = self._queue.popleft
        try:
            while len(out) < self.batch_n:
                out.append(pop())
        except IndexError:
            pass
        return out

    def _sum(self, batch: list[tuple[int, Frame]], plan: Plan) -> None:
        """Decode a batch into one array (one call when the codec allows), then sum and reduce
        it with a few calls: fewer GIL hand-overs (see ``summary_decode.batch_decoder``)."""
        t0 = time.thread_time()
        taken: list[tuple[int, Frame]] = []
        seen: set[int] = set()
        for position, frame in batch:
            if not self._mask[position] and position not in seen:  # duplicates: once
                seen.add(position)
                taken.append((position, frame))
        if not taken:
            return
        frames = self._decode_batch(taken)
        positions: list[int] = []
        if frames is not None:
            positions = [p for p, _ in taken]
        else:  # frame by frame: a corrupt frame is left out, alone
            frames = self._frames
            for position, frame in taken:
                arr = self._decode(frame)
                if arr is not None:
                    frames[len(positions)] = arr
                    positions.append(position)
            if not positions:
                return
            frames = frames[: len(positions)]
        for p in positions:
            self._mask[p] = 1
        self._reduction.add(np.asarray(positions, dtype=np.int64), frames)
        cost = (time.thread_time() - t0) / len(positions)
        for _ in positions:
            plan.frame_cost(cost)

    def _decode_batch(self, taken: list[tuple[int, Frame]]) -> np.ndarray | None:
        """All frames of ``taken`` in one call, or None (mixed codecs, or a corrupt frame)."""
        codec = taken[0][1].codec
        if any(f.codec is not codec for _, f in taken):
            return None
        if codec not in self._batch_decoders:
            self._batch_decoders[codec] = batch_decoder(
                codec, self.frame_shape, self.dtype, self.decoder
            )
        decode = self._batch_decoders[codec]
        if decode is None:
            return None
        try:
            return decode([f.payload for _, f in taken])
        except Exception:  # find the bad frame(s) one by one
            return None

    def _decode(self, frame: Frame) -> np.ndarray | None:
        try:
            decode = self._decoders.get(frame.codec)
            if decode is None:
                decode = make_decoder(frame.codec, self.frame_shape, self.dtype, self.decoder)
                self._decoders[frame.codec] = decode
            arr: np.ndarray = decode(frame.payload)
        except Exception as exc:  # a corrupt frame is the writer's business, not ours
            self.failed += 1
            logger.debug("summary: frame %d not summed: %s", frame.frame_id, exc)
            return None
        return arr

    def _choose_grid(self, plan: Plan, now: float) -> None:
        """Measure rate and cost over the last window; take the finest grid the budget allows."""
        plan.update(now, self._cpu, self.offered)
        if self._share >= 1.0:
            return  # one thread cannot use more than one core
        current = self._min_class
        chosen = choose_grid(
            plan, self._share, self._cpu - self._share * (now - self._t0), current, self._fraction
        )
        if chosen != current:
            self._min_class = chosen
            log_grid_change(plan, current, chosen, self._cpu, self._share, now - self._t0)
