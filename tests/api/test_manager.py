"""AcquisitionManager against the fake engine, without HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stemdaq import slot as slot_module
from stemdaq.errors import BusyError, ConfigError, DetectorError, NotFoundError, PathError
from stemdaq.history import HistoryStore
from stemdaq.manager import AcquisitionManager
from stemdaq.models import AcquisitionState
from stemdaq.settings import Settings

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


async def _until_free(manager: AcquisitionManager, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while manager.current is not None:
            await asyncio.sleep(0.02)


async def test_cancelled_arm_releases_the_slot(make_settings: Callable[..., Settings]) -> None:
    """A request cancelled while start() blocks (client gone, shutdown) must not wedge the slot."""
    entered, gate = threading.Event(), threading.Event()
    built: list[FakeAcquisition] = []

    class SlowStart(FakeAcquisition):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

        def start(self) -> None:  # like a SIMPLON arm call that takes its time
            entered.set()
            gate.wait(10)
            super().start()

    manager = AcquisitionManager(make_settings(), factory=SlowStart)
    await manager.start()
    try:
        arming = asyncio.create_task(manager.arm({"stream_endpoint": "fake://hold"}))
        assert await asyncio.to_thread(entered.wait, 5)
        arming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await arming
        (acq,) = built
        with pytest.raises(BusyError):  # still watched while start() runs in its thread
            await manager.arm()
        gate.set()
        await _until_free(manager)
        assert acq.closed and acq.state is AcquisitionState.ABORTED  # aborted once started
        record = manager.get(acq.acq_id)
        assert record.state is AcquisitionState.FAILED and "cancelled" in (record.error or "")
        await asyncio.sleep(0.1)  # a late engine snapshot must not turn it into "aborted"
        assert manager.get(acq.acq_id).state is AcquisitionState.FAILED
        info = await manager.arm({"scan_shape": [2, 2]})  # the slot is free again
        await _finish(manager, info.id)
        assert manager.get(info.id).state is AcquisitionState.COMPLETED
    finally:
        gate.set()
        await manager.close()


async def test_failed_start_stays_failed_on_disk(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    manager = AcquisitionManager(settings, factory=FakeAcquisition)
    await manager.start()
    with pytest.raises(DetectorError):
        await manager.arm({"stream_endpoint": "fake://detector-refuses"})
    await asyncio.sleep(0.2)  # the engine's own "aborted" snapshot has come and gone
    (record,) = manager.list()[0]
    assert record.state is AcquisitionState.FAILED and "refused" in (record.error or "")
    (on_disk,) = HistoryStore(settings.resolved_state_dir).load()
    assert on_disk.state is AcquisitionState.FAILED and on_disk.error == record.error
    await manager.close()


async def test_failed_start_with_stuck_threads_closes_in_background(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slot_module, "_FAIL_WAIT", 0.1)
    gate, close_called = threading.Event(), threading.Event()
    loop_thread = threading.get_ident()
    close_threads: list[int] = []

    class StuckRefusal(FakeAcquisition):
        def start(self) -> None:
            raise DetectorError("SIMPLON arm refused: 503 detector busy")

        def wait(self, timeout: float | None = None) -> bool:
            return gate.wait(timeout)

        def close(self) -> None:  # blocks until the threads end
            close_threads.append(threading.get_ident())
            close_called.set()
            gate.wait(10)
            self.closed = True

    manager = AcquisitionManager(make_settings(), factory=StuckRefusal)
    await manager.start()
    try:
        async with asyncio.timeout(3):
            with pytest.raises(DetectorError):
                await manager.arm()
        assert manager.current is None
        (record,) = manager.list()[0]
        assert record.state is AcquisitionState.FAILED
        assert await asyncio.to_thread(close_called.wait, 2)  # scheduled all the same...
        assert close_threads and close_threads[0] != loop_thread  # ...off the event loop
    finally:
        gate.set()
        await manager.close()


async def test_stale_snapshots_are_dropped(make_settings: Callable[..., Settings]) -> None:
    manager = AcquisitionManager(make_settings(), factory=FakeAcquisition)
    await manager.start()
    info = await manager.arm({"stream_endpoint": "fake://hold"})
    async with asyncio.timeout(5):
        while manager.get(info.id).state is not AcquisitionState.ACQUIRING:
            await asyncio.sleep(0.01)
    queue = manager.subscribe()
    live = manager.get(info.id)
    stale = live.model_copy(update={"state": AcquisitionState.ARMED})
    await asyncio.to_thread(manager._records.on_change, stale)  # a late control-thread snapshot
    await asyncio.sleep(0.05)
    assert manager._records.history.get(info.id).state is AcquisitionState.ACQUIRING  # type: ignore[union-attr]
    # two threads racing: the history never goes back, whatever the interleaving
    states = [AcquisitionState.ARMED, AcquisitionState.ACQUIRING] * 200
    await asyncio.gather(
        *(
            asyncio.to_thread(manager._records.on_change, live.model_copy(update={"state": s}))
            for s in states
        )
    )
    await asyncio.sleep(0.05)
    assert manager._records.history.get(info.id).state is AcquisitionState.ACQUIRING  # type: ignore[union-attr]
    manager.abort(info.id)
    await _finish(manager, info.id)
    seen = []
    while not queue.empty():
        event = queue.get_nowait()
        assert event is not None
        if event.kind == "state":
            seen.append(event.info.state)
    assert AcquisitionState.ARMED not in seen and seen[-1] is AcquisitionState.ABORTED
    await manager.close()


async def test_shutdown_is_bounded_when_the_engine_hangs(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slot_module, "_CLOSE_WAIT", 0.2)

    class DeafToAbort(FakeAcquisition):
        def abort(self) -> None:  # the engine never ends
            pass

        def close(self) -> None:
            self._done.wait(10)

    manager = AcquisitionManager(make_settings(), factory=DeafToAbort)
    await manager.start()
    info = await manager.arm({"stream_endpoint": "fake://hold"})
    acq = manager.current
    assert isinstance(acq, DeafToAbort)
    try:
        t0 = time.monotonic()
        await manager.close(timeout=0.3)
        assert time.monotonic() - t0 < 5
        assert manager.current is None
        record = manager.get(info.id)
        assert record.state is AcquisitionState.FAILED and "shut down" in (record.error or "")
    finally:
        FakeAcquisition.abort(acq)  # let the fake's thread end


async def test_dangling_partial_link_is_refused(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    manager = AcquisitionManager(
        make_settings(acquisition={"file_template": "fixed.nxs"}), factory=FakeAcquisition
    )
    await manager.start()
    outside = tmp_path / "outside"
    outside.mkdir()
    link = manager.data_dir / "fixed.nxs.partial"
    link.symlink_to(outside / "stolen.nxs")  # dangling: exists() says False
    with pytest.raises(PathError, match="exists already"):
        await manager.arm({"scan_shape": [2, 2]})
    assert manager.current is None and not (outside / "stolen.nxs").exists()
    link.unlink()
    info = await manager.arm({"scan_shape": [2, 2]})
    await _finish(manager, info.id)
    assert not (outside / "stolen.nxs").exists()
    await manager.close()


class _SlowFiling(FakeAcquisition):
    """Reports its final state, then takes a while to close (a file's close, a fsync)."""

    def close(self) -> None:
        super().close()
        time.sleep(0.5)


async def test_arm_right_after_a_final_state_waits_for_filing_instead_of_409(
    make_settings: Callable[..., Settings],
) -> None:
    manager = AcquisitionManager(make_settings(), factory=_SlowFiling)
    await manager.start()
    first = await manager.arm({"scan_shape": [4, 4]})
    async with asyncio.timeout(10):
        while not manager.get(first.id).state.is_final:  # what a client polling /status sees
            await asyncio.sleep(0.01)
    assert manager.current is not None, "the test needs the window between final and filed"
    second = await manager.arm({"scan_shape": [4, 4]})  # raised BusyError (409) before
    assert second.id != first.id
    await _finish(manager, second.id)
    assert manager.get(first.id).state is AcquisitionState.COMPLETED
    await manager.close()
