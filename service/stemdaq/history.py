"""Acquisition history kept across restarts: one JSON file per acquisition.

``<state_dir>/acquisitions/<id>.json`` holds the last :class:`AcquisitionInfo` seen for that
acquisition. Each write goes to a temporary file of its own in the same folder, is fsync'd, then
``os.replace``'d over the record, and the folder is fsync'd: a crash or a full disk leaves the old
record or the new one, never a torn one. A write that fails (e.g. ENOSPC) is logged once and kept
in memory; :meth:`HistoryStore.retry_pending` and every later save try it again.

At start-up (:meth:`HistoryStore.load`) an acquisition that is not final was cut short by the
restart: it is marked failed, and when its ``.partial`` file is there the record is pointed at it,
with the frames the file really holds (read in a child process with a time bound).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from stemdaq.models import AcquisitionInfo, AcquisitionState

logger = logging.getLogger(__name__)

RESTART_ERROR = "service restarted"


class HistoryStore:
    """Thread-safe store of :class:`AcquisitionInfo` records, one file each; never raises on I/O.

    Parameters
    ----------
    state_dir
        Directory for the history (created if missing).
    probe_timeout
        Seconds to read one ``.partial`` file at :meth:`load`.
    load_budget
        Seconds all those reads may take together; later records are marked without reading.
    """

    def __init__(
        self, state_dir: Path, *, probe_timeout: float = 10.0, load_budget: float = 60.0
    ) -> None:
        self.directory = Path(state_dir) / "acquisitions"
        self.probe_timeout = probe_timeout
        self.load_budget = load_budget
        self._lock = threading.Lock()
        self._records: dict[str, AcquisitionInfo] = {}
        self._pending: dict[str, AcquisitionInfo] = {}  # stored in memory, not yet on disk

    @property
    def pending(self) -> int:
        """Records whose last write failed and waits for a retry."""
        with self._lock:
            return len(self._pending)

    def load(self) -> list[AcquisitionInfo]:
        """Read every record; mark the ones a restart interrupted as failed. Blocking (disk).

        Leftover temporary files are removed; an unreadable record is skipped with a warning.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            paths = sorted(self.directory.iterdir())
        except OSError as exc:
            logger.error("cannot read the history in %s: %s", self.directory, exc)
            paths = []
        records: dict[str, AcquisitionInfo] = {}
        changed: list[AcquisitionInfo] = []
        deadline = time.monotonic() + self.load_budget
        for path in paths:
            if path.name.endswith(".tmp"):  # a write cut short (crash, full disk): not a record
                _remove(path)
                continue
            if path.suffix != ".json":
                continue
            try:
                info = AcquisitionInfo.model_validate_json(path.read_bytes())
            except (OSError, ValueError) as exc:  # ValidationError is a ValueError
                logger.warning("ignoring unreadable history record %s: %s", path, exc)
                continue
            fixed = reconcile(info, self.probe_timeout, deadline)
            if fixed is not info:
                changed.append(fixed)
            records[fixed.id] = fixed
        with self._lock:
            self._records = records
            for info in changed:
                self._write(info)
        return list(records.values())

    def save(self, info: AcquisitionInfo, *, replace_final: bool = False) -> bool:
        """Record ``info``; True if it was accepted (kept in memory; on disk now or later).

        A final record is never replaced by a non-final one, nor by a final one of another state
        (a late ``aborted`` snapshot from the engine must not turn a ``failed`` record with its
        error into an ``aborted`` one) unless ``replace_final`` is given: the manager's own
        verdict on an acquisition it failed. Earlier failed writes are retried too.
        """
        with self._lock:
            old = self._records.get(info.id)
            if old is not None and old.state.is_final:
                if not info.state.is_final:
                    return False
                if info.state != old.state and not replace_final:
                    return False
            self._records[info.id] = info
            self._write(info)
            self._retry_locked()
            return True

    def retry_pending(self) -> int:
        """Write the records whose last write failed; return how many are now on disk."""
        with self._lock:
            return self._retry_locked()

    def get(self, acq_id: str) -> AcquisitionInfo | None:
        """The stored record, or None."""
        with self._lock:
            return self._records.get(acq_id)

    def ids(self) -> list[str]:
        """All ids, newest first."""
        with self._lock:
            return sorted(self._records, reverse=True)

    def _retry_locked(self) -> int:
        return sum(self._write(info) for info in list(self._pending.values()))

    def _write(self, info: AcquisitionInfo) -> bool:
        """Replace the record on disk; on failure keep it pending (logged once). Lock held."""
        path = self.directory / f"{info.id}.json"
        try:
            _atomic_write(path, json.dumps(info.model_dump(mode="json"), indent=1).encode())
        except OSError as exc:  # history is a convenience: never fail an acquisition for it
            if info.id not in self._pending:
                logger.error("cannot write history record %s (kept, will retry): %s", path, exc)
            self._pending[info.id] = info
            return False
        if self._pending.pop(info.id, None) is not None:
            logger.info("history record %s written after an earlier failure", path)
        return True


def _atomic_write(path: Path, data: bytes) -> None:
    """A unique temporary file in the same folder, fsync, ``os.replace``, fsync of the folder."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:  # some filesystems cannot fsync a folder: the record is written
        logger.debug("cannot fsync %s: %s", path.parent, exc)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot remove %s: %s", path, exc)


def reconcile(info: AcquisitionInfo, timeout: float, deadline: float) -> AcquisitionInfo:
    """The record as it should read after a restart; ``info`` itself when nothing changes.

    A record that is not final becomes failed. When its file was never renamed from
    ``<file_path>.partial`` (the writer was killed), the record points at that file and its
    frame counts are what the file holds; final records are pointed at it too, with a warning.
    """
    final = Path(info.file_path)
    partial = final.with_name(final.name + ".partial")
    orphan = bool(info.file_path) and not final.exists() and partial.exists()
    if info.state.is_final and not orphan:
        return info
    update: dict[str, object] = {}
    if not info.state.is_final:
        update = {
            "state": AcquisitionState.FAILED,
            "error": info.error or RESTART_ERROR,
            "finished_at": info.finished_at or datetime.now(UTC).isoformat(timespec="milliseconds"),
            "frames_per_second": 0.0,
            "mb_per_second": 0.0,
            "queue_depth": 0,
            "eta_seconds": None,
        }
    if orphan:
        note = _from_partial(info, partial, update, min(timeout, deadline - time.monotonic()))
        if info.state.is_final:
            update["warnings"] = [*info.warnings, note]
        else:
            update["error"] = f"{info.error}; {note}" if info.error else note
    return info.model_copy(update=update)


def _from_partial(
    info: AcquisitionInfo, partial: Path, update: dict[str, object], timeout: float
) -> str:
    """Point ``update`` at ``partial`` with the frames it holds; return the one-line note."""
    from stemdaq.writer.probe import probe_file

    head = "service restarted during the acquisition" if not info.state.is_final else "not closed"
    update["file_path"] = str(partial)
    update["file_uri"] = partial.absolute().as_uri()
    how = "open it with h5py.File(p, 'r', swmr=True) or run `stemdaq inspect`"
    if timeout <= 0.5:
        return f"{head}; the frames may be in {partial} (not read: start-up check out of time)"
    probe = probe_file(partial, timeout=timeout, verify="index")
    if not probe.images:
        why = probe.error or "no frame bookkeeping in it"
        return f"{head}; the frames may be in {partial}, which could not be read: {why}"
    written = probe.frames_claimed
    expected = info.frames_expected or info.counters.frames_expected or probe.positions
    counters = info.counters.model_copy(
        update={
            "frames_written": written,
            "frames_expected": expected,
            "frames_missing": max(0, expected - written),
        }
    )
    update.update(frames_written=written, frames_expected=expected, counters=counters)
    note = f"{head}: {written} of {expected} frames are in {partial} ({how})"
    unverified = written - sum(im.frames_verified or 0 for im in probe.images)
    if not probe.readable or unverified:
        note += f"; not all could be checked: {probe.error or f'{unverified} have no data'}"
    return note
