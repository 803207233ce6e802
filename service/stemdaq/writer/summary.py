"""Summed diffraction pattern and total-intensity image, computed off the hot path.

Pre-compressed frames must be decompressed to be summed. :class:`SummaryAccumulator` does that
in its own thread, fed through a bounded queue that the writer thread never waits on. It also
keeps to a CPU budget (``cpu_share`` of one core, measured with the thread's own CPU clock): on
a small machine a summary thread that takes all the CPU it can get slows the data thread down
(measured: 27k -> 12k frames/s on 2 cores). When the budget or the queue is exhausted, frames are
skipped and the ``included`` mask says which positions were used.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from stemdaq.models import Frame
from stemdaq.writer.codecs import decode_chunk

logger = logging.getLogger(__name__)


class SummaryAccumulator:
    """Sum frames of one channel into a pattern [ny, nx] and an image [n_m, n_k].

    Parameters
    ----------
    scan_shape
        (n_m, n_k).
    frame_shape
        (ny, nx).
    dtype
        Frame dtype; integer frames are summed exactly in uint64, float frames in float64.
    max_queue
        Frames waiting to be summed; beyond that :meth:`offer` skips frames.
    channel
        Channel to sum; default: the first channel offered.
    cpu_share
        CPU time the summary thread may use, as a fraction of one core (1.0: no limit).
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
    ) -> None:
        self.scan_shape = (int(scan_shape[0]), int(scan_shape[1]))
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.dtype = np.dtype(dtype)
        acc = np.float64 if self.dtype.kind == "f" else np.uint64
        self._pattern = np.zeros(self.frame_shape, dtype=acc)
        self._image = np.zeros(self.scan_shape, dtype=acc).reshape(-1)
        self._mask = np.zeros(self.scan_shape, dtype=bool).reshape(-1)
        self._n_pos = self.scan_shape[0] * self.scan_shape[1]
        self._channel = channel
        self._queue: queue.Queue[tuple[int, Frame] | None] = queue.Queue(maxsize=max_queue)
        self.skipped = 0
        self.failed = 0
        self._included = 0
        self._result: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._cpu_share = cpu_share
        self._cpu_used = 0.0  # seconds of CPU the summary thread used (its own clock)
        self._t0: float | None = None
        self._thread = threading.Thread(target=self._run, name="stemdaq-summary", daemon=True)
        self._thread.start()

    @property
    def included(self) -> int:
        """Frames summed so far."""
        return self._included

    @property
    def channel(self) -> str | None:
        """The channel being summed (None until the first frame)."""
        return self._channel

    def offer(self, position: int, frame: Frame) -> bool:
        """Queue a frame for summing; never blocks. False when skipped (or another channel)."""
        if self._channel is None:
            self._channel = frame.channel
        elif frame.channel != self._channel:
            return False
        if self._result is not None or not 0 <= position < self._n_pos:
            return False
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if self._cpu_used > self._cpu_share * (now - self._t0) + 0.05:  # over budget: skip
            self.skipped += 1
            return False
        try:
            self._queue.put_nowait((position, frame))
        except queue.Full:
            self.skipped += 1
            return False
        return True

    def _run(self) -> None:
        shape, dtype = self.frame_shape, self.dtype
        cpu0 = time.thread_time()
        while True:
            self._cpu_used = time.thread_time() - cpu0
            item = self._queue.get()
            if item is None:  # finish()
                return
            position, frame = item
            try:
                arr = decode_chunk(frame.payload, frame.codec, shape, dtype)
            except Exception as exc:  # a corrupt frame is the writer's business, not ours
                self.failed += 1
                logger.debug("summary: frame %d not summed: %s", frame.frame_id, exc)
                continue
            if self._mask[position]:  # a duplicate: count each position once
                continue
            self._pattern += arr
            self._image[position] = arr.sum(dtype=self._image.dtype)
            self._mask[position] = True
            self._included += 1

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stop the thread; return (sum_pattern [ny, nx], total_image [n_m, n_k], included mask).

        Frames still queued are summed first. Idempotent.
        """
        if self._result is None:
            while self._thread.is_alive():  # never block on a full queue of a dead thread
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self._result = (
                self._pattern,
                self._image.reshape(self.scan_shape),
                self._mask.reshape(self.scan_shape).copy(),
            )
        return self._result
