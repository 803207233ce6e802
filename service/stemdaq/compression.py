"""The compression window: frames that arrive uncompressed, compressed in a thread pool.

The codecs (bitshuffle, LZ4, zstd, zlib) release the GIL, so a pool uses every core. Frames are
handed over in batches (one pool task per ``batch`` frames: fewer wake-ups per frame) and come
back in arrival order, so the file is written in the order the stream delivered it. The window is
bounded in bytes: when full, :meth:`CompressionWindow.add` waits for the oldest batch.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from stemdaq.models import Frame
from stemdaq.threadnames import set_os_name

Item = tuple[int, int, Frame]  # (scan position, channel index, frame)


def _prepare_all(prepare: Callable[[Frame], Any], items: list[Item]) -> list[Any]:
    """Pool task: the chunk for each frame, or the exception that frame raised."""
    out: list[Any] = []
    for _, _, frame in items:
        try:
            out.append(prepare(frame))
        except Exception as exc:  # one bad frame must not cost its neighbours
            out.append(exc)
    return out


class CompressionWindow:
    """Compress frames in a pool and give them back in order.

    Parameters
    ----------
    prepare
        Thread-safe ``frame -> chunk`` (``NexusWriter.prepare``); may raise for a bad frame.
    workers
        Pool threads.
    max_bytes
        Payload bytes allowed in the window before :meth:`add` waits for the oldest batch.
    batch
        Frames per pool task.
    """

    def __init__(
        self,
        prepare: Callable[[Frame], Any],
        workers: int = 2,
        max_bytes: int = 64 << 20,
        batch: int = 16,
        name: str = "stemdaq-compress",
    ) -> None:
        self._prepare = prepare
        self._pool = ThreadPoolExecutor(
            workers,
            thread_name_prefix=name,
            initializer=set_os_name,
            initargs=("stemdaq-encode",),
        )
        self._max_bytes = max_bytes
        self._batch = batch
        self._gathering: list[Item] = []
        self._pending: collections.deque[tuple[list[Item], Future[list[Any]]]] = collections.deque()
        self._nbytes = 0

    def __len__(self) -> int:
        """Frames in the window (gathering or being compressed)."""
        return len(self._gathering) + sum(len(items) for items, _ in list(self._pending))

    @property
    def empty(self) -> bool:
        """True when no frame is in the window (cheap: checked for every frame)."""
        return not self._gathering and not self._pending

    @property
    def full(self) -> bool:
        """True when the window holds ``max_bytes`` or more."""
        return self._nbytes > self._max_bytes

    def add(self, position: int, channel_index: int, frame: Frame) -> None:
        """Queue one frame for compression."""
        self._gathering.append((position, channel_index, frame))
        self._nbytes += len(frame.payload)
        if len(self._gathering) >= self._batch:
            self._submit()

    def _submit(self) -> None:
        if self._gathering:
            items, self._gathering = self._gathering, []
            self._pending.append((items, self._pool.submit(_prepare_all, self._prepare, items)))

    def ready(self, block: bool) -> Iterator[tuple[int, int, Frame, Any]]:
        """(position, channel index, frame, chunk or exception) of finished frames, in order.

        ``block``: hand over what is still gathering and wait until every frame is done.
        """
        if block:
            self._submit()
        pending = self._pending
        while pending and (block or pending[0][1].done()):
            items, future = pending.popleft()
            for (position, channel_index, frame), chunk in zip(items, future.result(), strict=True):
                self._nbytes -= len(frame.payload)
                yield position, channel_index, frame, chunk

    def shutdown(self) -> None:
        """Stop the pool (after the work in it is done)."""
        self._pool.shutdown(wait=True)
