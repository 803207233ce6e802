"""HistoryStore on a full disk, with leftovers of cut-short writes, and after a kill -9 restart."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest
from stemdaq import history
from stemdaq.history import HistoryStore
from stemdaq.models import AcquisitionInfo, AcquisitionState, Counters

WRITER_TESTS = Path(__file__).parents[1] / "writer"


def _info(
    state: AcquisitionState = AcquisitionState.ACQUIRING,
    acq_id: str = "20260101-000000-0001",
    file_path: str = "/data/x.nxs",
    **kw: object,
) -> AcquisitionInfo:
    return AcquisitionInfo(
        id=acq_id,
        state=state,
        file_path=file_path,
        file_uri=Path(file_path).as_uri(),
        created_at="2026-01-01T00:00:00+00:00",
        **kw,  # type: ignore[arg-type]
    )


def _on_disk(store: HistoryStore, acq_id: str) -> dict[str, object]:
    return json.loads((store.directory / f"{acq_id}.json").read_text())


def test_leftover_tmp_files_and_unreadable_records_are_tolerated(tmp_path, caplog) -> None:
    store = HistoryStore(tmp_path)
    store.load()
    assert store.save(_info(AcquisitionState.COMPLETED))
    d = store.directory
    (d / "20260101-000000-0001.json.1a2b3c4d.tmp").write_bytes(b"")  # 0 bytes: full disk
    (d / "20260101-000000-0002.json.tmp").write_text('{"id": "20260101-00')  # old naming, torn
    (d / "20260101-000000-0003.json").write_bytes(b"")  # a record torn by an older version
    with caplog.at_level(logging.WARNING, logger="stemdaq.history"):
        records = HistoryStore(tmp_path).load()
    assert [r.id for r in records] == ["20260101-000000-0001"]
    assert sorted(p.name for p in d.iterdir()) == [
        "20260101-000000-0001.json",
        "20260101-000000-0003.json",  # kept for a person to look at, but not a record
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "20260101-000000-0003.json" in warnings[0].getMessage()


def test_a_write_that_fails_with_enospc_is_kept_and_retried(tmp_path, monkeypatch, caplog) -> None:
    store = HistoryStore(tmp_path)
    store.load()
    assert store.save(_info(AcquisitionState.ACQUIRING))
    real_replace = os.replace

    def full_disk(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(history.os, "replace", full_disk)
    with caplog.at_level(logging.ERROR, logger="stemdaq.history"):
        assert store.save(_info(AcquisitionState.FINISHING))  # accepted, not on disk yet
        assert store.save(_info(AcquisitionState.COMPLETED, frames_written=12))
        assert store.retry_pending() == 0  # still full
    assert store.pending == 1
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1  # logged once
    assert _on_disk(store, "20260101-000000-0001")["state"] == "acquiring"
    assert not list(store.directory.glob("*.tmp"))  # no temporary file left behind
    assert store.get("20260101-000000-0001").state is AcquisitionState.COMPLETED  # type: ignore[union-attr]

    monkeypatch.setattr(history.os, "replace", real_replace)
    assert store.retry_pending() == 1 and store.pending == 0
    on_disk = _on_disk(store, "20260101-000000-0001")
    assert on_disk["state"] == "completed" and on_disk["frames_written"] == 12


def test_a_later_save_writes_the_pending_records(tmp_path) -> None:
    store = HistoryStore(tmp_path)
    store.load()
    d = store.directory
    d.rename(tmp_path / "away")
    d.write_text("a file where the folder should be")  # every write fails for real (ENOTDIR)
    assert store.save(_info(AcquisitionState.COMPLETED, acq_id="20260101-000000-0001"))
    assert store.pending == 1
    d.unlink()
    (tmp_path / "away").rename(d)
    assert store.save(_info(AcquisitionState.ARMED, acq_id="20260101-000000-0002"))
    assert store.pending == 0
    assert {r.id for r in HistoryStore(tmp_path).load()} == {
        "20260101-000000-0001",
        "20260101-000000-0002",
    }


def test_a_history_that_cannot_be_created_does_not_raise(tmp_path) -> None:
    (tmp_path / "state").write_text("not a folder")
    store = HistoryStore(tmp_path / "state")
    assert store.load() == []
    assert store.save(_info()) and store.pending == 1
    assert store.retry_pending() == 0


def _killed_writer(final: Path) -> Path:
    sys.path.insert(0, str(WRITER_TESTS))
    from writer_helpers import killed_writer_partial

    return killed_writer_partial(final)


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9")
def test_restart_points_the_record_at_the_partial_file(tmp_path) -> None:
    final = tmp_path / "data" / "scan.nxs"
    final.parent.mkdir()
    partial = _killed_writer(final)
    store = HistoryStore(tmp_path / "state")
    store.load()
    running = _info(
        file_path=str(final),
        frames_expected=20,
        frames_written=13,  # what the engine counted; 3 were never flushed
        counters=Counters(frames_expected=20, frames_received=13, frames_written=13),
    )
    closed = _info(AcquisitionState.COMPLETED, acq_id="20251231-000000-0001", file_path=str(final))
    store.save(running)
    store.save(closed)

    records = {r.id: r for r in HistoryStore(tmp_path / "state").load()}
    r = records[running.id]
    assert r.state is AcquisitionState.FAILED
    assert r.file_path == str(partial) and r.file_uri == partial.as_uri()
    assert r.frames_written == 10 and r.counters.frames_written == 10
    assert r.counters.frames_missing == 10 and r.counters.frames_received == 13
    assert r.error == (
        f"service restarted during the acquisition: 10 of 20 frames are in {partial} "
        "(open it with h5py.File(p, 'r', swmr=True) or run `stemdaq inspect`)"
    )
    c = records[closed.id]  # a final record keeps its verdict, with a warning
    assert c.state is AcquisitionState.COMPLETED and c.error is None
    assert c.file_path == str(partial) and "not closed: 10 of 20 frames" in c.warnings[-1]

    again = {r.id: r for r in HistoryStore(tmp_path / "state").load()}  # on disk, not re-read
    assert again[running.id] == r


def test_restart_with_an_unreadable_partial_says_so(tmp_path) -> None:
    final = tmp_path / "bad.nxs"
    final.with_name("bad.nxs.partial").write_bytes(b"\0" * 100)
    store = HistoryStore(tmp_path / "state")
    store.load()
    store.save(_info(file_path=str(final)))
    (r,) = HistoryStore(tmp_path / "state").load()
    assert r.state is AcquisitionState.FAILED and r.file_path.endswith("bad.nxs.partial")
    assert r.error is not None and "could not be read" in r.error
    assert "file signature not found" in r.error


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_restart_check_is_bounded_in_time(tmp_path) -> None:
    final = tmp_path / "hang.nxs"
    os.mkfifo(final.with_name("hang.nxs.partial"))  # opening it never returns
    store = HistoryStore(tmp_path / "state", probe_timeout=1.0)
    store.load()
    store.save(_info(file_path=str(final)))
    t0 = time.monotonic()
    (r,) = HistoryStore(tmp_path / "state", probe_timeout=1.0).load()
    assert time.monotonic() - t0 < 1.0 + 5
    assert r.state is AcquisitionState.FAILED
    assert r.error is not None and "did not answer within 1 s" in r.error


def test_restart_without_any_file_keeps_the_plain_error(tmp_path) -> None:
    store = HistoryStore(tmp_path)
    store.load()
    store.save(_info(file_path=str(tmp_path / "never.nxs")))
    (r,) = HistoryStore(tmp_path).load()
    assert r.state is AcquisitionState.FAILED and r.error == "service restarted"
    assert r.file_path == str(tmp_path / "never.nxs")
