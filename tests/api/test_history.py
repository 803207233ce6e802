"""HistoryStore: a final record is not replaced by a different verdict."""

from __future__ import annotations

from pathlib import Path

from stemdaq.history import HistoryStore
from stemdaq.models import AcquisitionInfo, AcquisitionState


def _info(state: AcquisitionState, error: str | None = None) -> AcquisitionInfo:
    return AcquisitionInfo(
        id="20260101-000000-0001",
        state=state,
        file_path="/data/x.nxs",
        file_uri="file:///data/x.nxs",
        error=error,
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_final_record_keeps_its_state(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    store.load()
    assert store.save(_info(AcquisitionState.ACQUIRING))
    assert store.save(_info(AcquisitionState.FAILED, "start failed: refused"))
    assert not store.save(_info(AcquisitionState.ACQUIRING))  # non-final after final
    assert not store.save(_info(AcquisitionState.ABORTED))  # another final verdict
    assert store.save(_info(AcquisitionState.FAILED, "start failed: refused"))  # same state
    record = store.get("20260101-000000-0001")
    assert record is not None and record.state is AcquisitionState.FAILED
    (on_disk,) = HistoryStore(tmp_path).load()
    assert on_disk.state is AcquisitionState.FAILED and on_disk.error == "start failed: refused"
    assert store.save(_info(AcquisitionState.ABORTED), replace_final=True)  # the manager's word
    assert store.get("20260101-000000-0001").state is AcquisitionState.ABORTED  # type: ignore[union-attr]
