"""AcquisitionManager against the fake engine, without HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from stemdaq.config import Settings
from stemdaq.errors import BusyError, ConfigError, DetectorError, NotFoundError, PathError
from stemdaq.history import HistoryStore
from stemdaq.manager import AcquisitionManager
from stemdaq.models import AcquisitionState

from .fakes import FakeAcquisition


async def _finish(manager: AcquisitionManager, acq_id: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while manager.current is not None or not manager.get(acq_id).state.is_final:
            await asyncio.sleep(0.02)


async def test_arm_runs_to_completion_and_is_filed(make_settings: Callable[..., Settings]) -> None:
    manager = AcquisitionManager(make_settings(), factory=FakeAcquisition)
    await manager.start()
    queue = manager.subscribe()
    info = await manager.arm({"scan_shape": [8, 8]})
    assert info.state is AcquisitionState.ARMED
    assert Path(info.file_path).is_relative_to(manager.data_dir)
    with pytest.raises(BusyError):
        await manager.arm()
    await _finish(manager, info.id)
    final = manager.get(info.id)
    assert final.state is AcquisitionState.COMPLETED
    assert final.frames_written == 64
    assert manager.totals.frames_written == 64
    states = []
    while not queue.empty():
        event = queue.get_nowait()
        assert event is not None
        if event.kind == "state":
            states.append(event.info.state)
    assert states[0] is AcquisitionState.ACQUIRING and states[-1] is AcquisitionState.COMPLETED
    await manager.close()


async def test_overrides_are_validated(make_settings: Callable[..., Settings]) -> None:
    manager = AcquisitionManager(make_settings(), factory=FakeAcquisition)
    await manager.start()
    with pytest.raises(ConfigError, match="scan_shape"):
        await manager.arm({"scan_shape": [0, 4]})
    with pytest.raises(ConfigError, match="compression"):
        await manager.arm({"compression": "rar"})
    with pytest.raises(PathError):
        await manager.arm({"file_template": "../{id}.nxs"})
    with pytest.raises(ConfigError):
        await manager.arm({"stream_endpoint": None})
    assert manager.current is None
    with pytest.raises(NotFoundError):
        manager.get("nope")
    await manager.close()


async def test_detector_refusal_fails_the_acquisition(
    make_settings: Callable[..., Settings],
) -> None:
    manager = AcquisitionManager(make_settings(), factory=FakeAcquisition)
    await manager.start()
    with pytest.raises(DetectorError):
        await manager.arm({"stream_endpoint": "fake://detector-refuses"})
    assert manager.current is None
    (record,) = manager.list()[0]
    assert record.state is AcquisitionState.FAILED and "refused" in (record.error or "")
    await manager.close()


async def test_close_aborts_a_running_acquisition(make_settings: Callable[..., Settings]) -> None:
    manager = AcquisitionManager(make_settings(), factory=FakeAcquisition)
    await manager.start()
    info = await manager.arm({"stream_endpoint": "fake://hold"})
    await manager.close()
    assert manager.current is None
    assert manager.get(info.id).state is AcquisitionState.ABORTED


async def test_history_survives_restart_and_interrupted_runs_fail(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    manager = AcquisitionManager(settings, factory=FakeAcquisition)
    await manager.start()
    first = await manager.arm({"scan_shape": [4, 4]})
    await _finish(manager, first.id)
    second = await manager.arm({"stream_endpoint": "fake://hold"})
    # simulate a crash: the record on disk is left non-final
    while manager.get(second.id).state is not AcquisitionState.ACQUIRING:
        await asyncio.sleep(0.01)
    HistoryStore(settings.resolved_state_dir).save(manager.get(second.id))
    crashed = HistoryStore(settings.resolved_state_dir)
    records = {r.id: r for r in crashed.load()}
    assert records[first.id].state is AcquisitionState.COMPLETED
    assert records[second.id].state is AcquisitionState.FAILED
    assert records[second.id].error == "service restarted"
    await manager.close()

    again = AcquisitionManager(settings, factory=FakeAcquisition)
    await again.start()
    items, total = again.list()
    assert total == 2 and [i.id for i in items] == [second.id, first.id]  # newest first
    third = await again.arm({"scan_shape": [2, 2]})
    assert third.id > second.id  # ids keep sorting after a restart
    await again.close()


async def test_start_failure_before_threads_is_a_config_error(
    make_settings: Callable[..., Settings],
) -> None:
    manager = AcquisitionManager(make_settings(), factory=FakeAcquisition)
    await manager.start()
    with pytest.raises(ConfigError, match="invalid endpoint"):
        await manager.arm({"stream_endpoint": "fake://bad-endpoint"})
    assert manager.current is None
    info = await manager.arm({"scan_shape": [2, 2]})  # the slot is free again
    await _finish(manager, info.id)
    await manager.close()
