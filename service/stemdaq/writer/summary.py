"""Summed diffraction pattern and total-intensity image, computed off the hot path.

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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from stemdaq.models import Codec, Frame
from stemdaq.writer.summary_decode import Decoder, Sums, available_decoder, make_decoder

logger = logging.getLogger(__name__)

#: grid classes: a position of class c lies on the grid of every 2**c-th row and column
GRID_STEPS = (1, 2, 4, 8, 16)
_COARSEST = len(GRID_STEPS) - 1
_PAUSED = len(GRID_STEPS)  # take nothing until back within the budget
#: CPU seconds the summary may run ahead of its budget before it takes no more frames
SLACK_S = 0.05
_WINDOW_S = 0.02  # how often the budget is checked and the grid chosen
_HEADROOM = 0.8  # plan for this fraction of the budget
_FINER = 0.6  # ... and go to a finer grid only when it fits in this fraction
_SMOOTH = 0.3  # weight of the newest window in the rate and overhead estimates
_SMOOTH_FRAME = 0.05  # weight of the newest frame in the cost estimate
_IDLE_WAIT_S = 0.05  # longest sleep without an offer


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
    ) -> None:
        self.scan_shape = (int(scan_shape[0]), int(scan_shape[1]))
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.dtype = np.dtype(dtype)
        self._n_pos = self.scan_shape[0] * self.scan_shape[1]
        self._sums = Sums(self._n_pos, self.frame_shape, self.dtype)
        self._grid, self._fraction = _grid_classes(self.scan_shape)
        self._mask = bytearray(self._n_pos)  # 1 where the position is in the sums
        self._channel = channel
        self._share = float(cpu_share)
        self._decoder_name = available_decoder(decoder)
        self._decoders: dict[Codec, Decoder] = {}
        # queue: appended by the data thread, popped by the summary thread (both atomic)
        self._queue: deque[tuple[int, Frame]] = deque()
        self._max_queue = max(1, int(max_queue))
        self._wake = threading.Event()
        self._waiting = False  # the summary thread sleeps on _wake
        self._closing = False
        self._min_class = 0  # offers are taken when their grid class is >= this
        # counters: each written by one thread only
        self.offered = 0
        self.skipped = 0
        self.failed = 0
        self._included = 0
        self._cpu = 0.0
        self._t0 = time.monotonic()
        self._t_end: float | None = None
        self._result: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._thread = threading.Thread(target=self._run, name="stemdaq-summary", daemon=True)
        self._thread.start()

    # -- what the control side reads --------------------------------------------------------

    @property
    def included(self) -> int:
        """Frames summed so far."""
        return self._included

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
        return 0 if self._min_class >= _PAUSED else GRID_STEPS[self._min_class]

    @property
    def decoder(self) -> str:
        """The decoder used for compressed frames (``dectris`` or ``bitshuffle``)."""
        return self._decoder_name

    # -- the data thread --------------------------------------------------------------------

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
        if self._grid[position] < self._min_class or len(self._queue) >= self._max_queue:
            self.skipped += 1
            return False
        self._queue.append((position, frame))
        if self._waiting:
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
            mask = np.frombuffer(bytes(self._mask), dtype=np.uint8).astype(bool)
            self._result = (
                self._sums.finish(),
                self._sums.image.reshape(self.scan_shape),
                mask.reshape(self.scan_shape),
            )
        return self._result

    # -- the summary thread -----------------------------------------------------------------

    def _run(self) -> None:
        cpu0 = time.thread_time()
        plan = _Plan(self._t0)
        try:
            while True:
                try:
                    position, frame = self._queue.popleft()
                except IndexError:
                    if self._closing:
                        return
                    self._sleep()
                else:
                    self._sum(position, frame, plan)
                now = time.monotonic()
                if now - plan.t >= _WINDOW_S:
                    self._cpu = time.thread_time() - cpu0
                    self._choose_grid(plan, now)
        except Exception:  # never let finish() wait on a dead thread's frames
            logger.exception("summary thread failed; the sums stop at %d frames", self._included)
        finally:
            self._cpu = time.thread_time() - cpu0

    def _sleep(self) -> None:
        """Wait for an offer (or the next budget check); the data thread wakes us."""
        self._wake.clear()
        self._waiting = True
        if not self._queue and not self._closing:
            self._wake.wait(_IDLE_WAIT_S)
        self._waiting = False

    def _sum(self, position: int, frame: Frame, plan: _Plan) -> None:
        if self._mask[position]:  # a duplicate: count each position once
            return
        t0 = time.thread_time()
        try:
            decode = self._decoders.get(frame.codec)
            if decode is None:
                decode = make_decoder(frame.codec, self.frame_shape, self.dtype, self.decoder)
                self._decoders[frame.codec] = decode
            arr = decode(frame.payload)
        except Exception as exc:  # a corrupt frame is the writer's business, not ours
            self.failed += 1
            logger.debug("summary: frame %d not summed: %s", frame.frame_id, exc)
            return
        self._sums.add(position, arr)
        self._mask[position] = 1
        self._included += 1
        plan.frame_cost(time.thread_time() - t0)

    def _choose_grid(self, plan: _Plan, now: float) -> None:
        """Measure rate and cost over the last window; take the finest grid the budget allows."""
        plan.update(now, self._cpu, self.offered)
        if self._share >= 1.0:
            return  # one thread cannot use more than one core
        debt = self._cpu - self._share * (now - self._t0)
        current = self._min_class
        if debt > SLACK_S or (current == _PAUSED and debt > SLACK_S / 2):
            chosen = _PAUSED
        elif plan.cost is None or plan.rate is None:
            chosen = min(current, _COARSEST)
        else:
            need = plan.rate * plan.cost  # cores to sum every frame offered
            chosen = _COARSEST
            for c in range(_COARSEST + 1):
                limit = self._share * (_FINER if c < current else _HEADROOM) - plan.overhead
                if need * self._fraction[c] <= limit:
                    chosen = c
                    break
        if chosen != current:
            self._min_class = chosen
            level = logging.INFO if current == 0 and not plan.logged else logging.DEBUG
            plan.logged = True
            if chosen == _PAUSED:
                what = "over budget, taking no frames"
            elif chosen == 0:
                what = "taking every frame"
            else:
                what = f"taking every {GRID_STEPS[chosen]}th row and column"
            logger.log(
                level,
                "summary: %s (%.3f of %.3f CPU s in %.1f s; %.0f frames/s offered)",
                what,
                self._cpu,
                self._share * (now - self._t0),
                now - self._t0,
                plan.rate or 0.0,
            )


class _Plan:
    """Offer rate, CPU per frame and CPU besides frames, measured (summary thread only).

    The budget goes to frames and to a fixed cost of waiting and waking; the finest grid that
    fits is ``rate x cost x fraction(grid) + overhead <= share``.
    """

    def __init__(self, t0: float) -> None:
        self.t = t0
        self.cpu = 0.0
        self.offered = 0
        self.rate: float | None = None  # offers per second
        self.cost: float | None = None  # CPU seconds per frame summed
        self.overhead = 0.0  # cores used besides summing frames
        self.frames_cpu = 0.0  # CPU seconds in frames since the last window
        self.frames = 0  # frames summed, all time
        self.logged = False

    def frame_cost(self, cpu: float) -> None:
        """One frame summed in ``cpu`` seconds (the first, which warms up, is not a sample)."""
        self.frames += 1
        self.frames_cpu += cpu
        if self.frames == 2:
            self.cost = cpu
        elif self.cost is not None:
            self.cost += _SMOOTH_FRAME * (cpu - self.cost)

    def update(self, now: float, cpu: float, offered: int) -> None:
        """Close a window: offers per second, and CPU not spent on frames."""
        dt = now - self.t
        rate = (offered - self.offered) / dt
        self.rate = rate if self.rate is None else self.rate + _SMOOTH * (rate - self.rate)
        other = max(0.0, cpu - self.cpu - self.frames_cpu) / dt
        self.overhead += _SMOOTH * (other - self.overhead)
        self.t, self.cpu, self.offered, self.frames_cpu = now, cpu, offered, 0.0


def _grid_classes(scan_shape: tuple[int, int]) -> tuple[bytes, list[float]]:
    """Per position its grid class (bytes, row-major) and the fraction of positions >= class."""

    def classes(n: int) -> np.ndarray:
        idx = np.arange(n)
        out = np.zeros(n, dtype=np.uint8)
        for c in range(1, _COARSEST + 1):
            out[idx % GRID_STEPS[c] == 0] = c
        return out

    grid = np.minimum.outer(classes(scan_shape[0]), classes(scan_shape[1])).reshape(-1)
    counts = np.bincount(grid, minlength=_COARSEST + 1)[::-1].cumsum()[::-1]
    return grid.tobytes(), [float(n) / max(1, grid.size) for n in counts]
