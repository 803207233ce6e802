"""Acquisition history kept across restarts: one JSON file per acquisition.

``<state_dir>/acquisitions/<id>.json`` holds the last :class:`AcquisitionInfo` seen for that
acquisition, replaced atomically (write to a temporary file, then ``os.replace``) on each state
change. Ids sort by time, so listing newest-first is a reverse sort of the file names. At start-up
an acquisition that is not final was cut short by the restart and is marked failed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from stemdaq.models import AcquisitionInfo, AcquisitionState

logger = logging.getLogger(__name__)

RESTART_ERROR = "service restarted"


class HistoryStore:
    """Thread-safe store of :class:`AcquisitionInfo` records, one file each.

    Parameters
    ----------
    state_dir
        Directory for the history (created if missing).
    """

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "acquisitions"
        self._lock = threading.Lock()
        self._records: dict[str, AcquisitionInfo] = {}

    def load(self) -> list[AcquisitionInfo]:
        """Read every record; mark the ones a restart interrupted as failed. Blocking (disk)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        records: dict[str, AcquisitionInfo] = {}
        for path in sorted(self.directory.glob("*.json")):
            try:
                info = AcquisitionInfo.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                logger.warning("ignoring unreadable history record %s: %s", path, exc)
                continue
            if not info.state.is_final:
                info = info.model_copy(
                    update={
                        "state": AcquisitionState.FAILED,
                        "error": info.error or RESTART_ERROR,
                        "finished_at": info.finished_at
                        or datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "frames_per_second": 0.0,
                        "mb_per_second": 0.0,
                        "queue_depth": 0,
                        "eta_seconds": None,
                    }
                )
                self._write(info)
            records[info.id] = info
        with self._lock:
            self._records = records
        return list(records.values())

    def save(self, info: AcquisitionInfo, *, replace_final: bool = False) -> bool:
        """Record ``info``; True if it was stored.

        A final record is never replaced by a non-final one, nor by a final one of another state
        (a late ``aborted`` snapshot from the engine must not turn a ``failed`` record with its
        error into an ``aborted`` one) unless ``replace_final`` is given: the manager's own
        verdict on an acquisition it failed.
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
            return True

    def get(self, acq_id: str) -> AcquisitionInfo | None:
        """The stored record, or None."""
        with self._lock:
            return self._records.get(acq_id)

    def ids(self) -> list[str]:
        """All ids, newest first."""
        with self._lock:
            return sorted(self._records, reverse=True)

    def _write(self, info: AcquisitionInfo) -> None:
        path = self.directory / f"{info.id}.json"
        tmp = path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(info.model_dump(mode="json"), indent=1))
            os.replace(tmp, path)
        except OSError as exc:  # history is a convenience: never fail an acquisition for it
            logger.error("cannot write history record %s: %s", path, exc)
