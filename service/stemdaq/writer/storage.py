"""The file's storage while it is written: free space against ``min_free_mb``, and the
page-cache flush in the background.

Free space is read (statvfs, ~2 us) at every flush and every ``min(min_free_mb / 4, 64 MB)``
of chunk bytes; below ``min_free_mb`` :meth:`StorageWatch.check` returns why, once, and the
writer stops the acquisition. Every :data:`SYNC_BYTES` of chunks, a thread calls
``fdatasync`` + ``POSIX_FADV_DONTNEED`` on the file: on long scans an ever larger page cache of
dirty data made writes stall in memory reclaim (a third of the short-run rate on a 10 GB
write); syncing every few hundred MB and telling the kernel we will not read the data back
keeps the rate steady. The sync runs beside the writing (one at a time), so the data thread
never waits for the disk.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from stemdaq.threadnames import named
from stemdaq.writer.filesafety import free_bytes, sync_fd

logger = logging.getLogger(__name__)

#: chunk bytes between two background syncs of the file
SYNC_BYTES = 256 << 20


class StorageWatch:
    """Free space and background syncs of one file (the data thread's; one per writer).

    Parameters
    ----------
    path
        The file being written (its folder's file system is watched).
    min_free_mb
        Stop below this many MB free (0: never look).
    """

    def __init__(self, path: Path, min_free_mb: float) -> None:
        self.path = Path(path)
        self.min_free = int(min_free_mb * 1e6)
        self._every = max(1 << 20, min(self.min_free // 4, 64 << 20))
        self._due = self._every
        self.unsynced = 0  # chunk bytes written since the last fdatasync
        self._syncer: threading.Thread | None = None
        self.low: str | None = None  # why the space is too low (set once)

    def written(self, n: int) -> bool:
        """Count ``n`` chunk bytes; True when free space is due to be looked at."""
        self.unsynced += n
        self._due -= n
        if self._due <= 0:
            self._due = self._every
            return True
        return False

    def check(self) -> str | None:
        """Why the file system is too full (below ``min_free_mb``), else None; said once."""
        if self.min_free <= 0 or self.low is not None:
            return None
        try:
            free = free_bytes(self.path.parent)
        except OSError:
            return None
        if free < self.min_free:
            self.low = (
                f"disk nearly full: {free / 1e6:.1f} MB free on the file's file system, "
                f"less than min_free_mb ({self.min_free / 1e6:g} MB)"
            )
            logger.error("%s: %s; stopping", self.path.name, self.low)
            return self.low
        return None

    def maybe_sync(self, fd_of: object) -> None:
        """Start a background sync of the file when :data:`SYNC_BYTES` were written since the
        last and none is running; ``fd_of`` is the open ``h5py.File`` (its file descriptor)."""
        if self.unsynced < SYNC_BYTES or (self._syncer is not None and self._syncer.is_alive()):
            return
        try:
            fd = fd_of.id.get_vfd_handle()  # type: ignore[attr-defined]
        except (AttributeError, ValueError) as exc:  # a driver without a file descriptor
            logger.debug("%s: no file descriptor to sync: %s", self.path.name, exc)
            return
        self._syncer = named(sync_fd, args=(fd, self.path.name), name="stemdaq-sync")
        self._syncer.start()
        self.unsynced = 0

    def join(self) -> None:
        """Wait for a running sync (before the file, and so its descriptor, is closed)."""
        if self._syncer is not None:
            self._syncer.join()
