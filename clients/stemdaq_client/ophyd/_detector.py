"""The stemdaq detector: an ophyd-async ``StandardDetector`` driven through the REST API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from typing import Any, cast

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from ophyd_async.core import (
    Array1D,
    PathProvider,
    StandardDetector,
    TriggerInfo,
    WatchableAsyncStatus,
    WatcherUpdate,
    soft_signal_r_and_setter,
    soft_signal_rw,
)

from stemdaq_client._client import AsyncClient
from stemdaq_client.ophyd._logic import (
    AcquisitionEndedError,
    StemdaqAcquireLogic,
    StemdaqDataLogic,
    StemdaqTriggerLogic,
)
from stemdaq_client.ophyd._session import StemdaqSession

#: seconds without a new row before trigger() gives up (its exposure_timeout)
ROW_TIMEOUT = 60.0


class StemdaqDetector(StandardDetector):
    """A stemdaq service as a bluesky detector (soft signals, no EPICS or Tango).

    ``trigger()`` (step scans, ``bp.count``) records one acquisition of ``scan_rows`` x
    ``scan_columns`` and emits one event holding all its rows; a fly scan prepared with
    ``TriggerInfo(number_of_events=n_rows)`` records one acquisition and emits one event per
    completed scan row (see :func:`fly_rows`).

    Parameters
    ----------
    url
        The service, e.g. ``http://127.0.0.1:8000``.
    path_provider
        Directory (inside the server's data directory) and file name of each acquisition.
    scan_shape
        ``(rows, columns)`` of a triggered acquisition; a fly scan takes its rows from the
        TriggerInfo.
    token
        Bearer token of the control endpoints (default env ``STEMDAQ_API_TOKEN``).
    overrides
        Per-acquisition config changes sent with every arm, e.g. ``{"scan_step": [2, 2]}``.
    """

    def __init__(
        self,
        url: str,
        path_provider: PathProvider,
        *,
        scan_shape: tuple[int, int] = (64, 64),
        token: str | None = None,
        overrides: dict[str, Any] | None = None,
        name: str = "",
    ) -> None:
        self.client = AsyncClient(url, token)
        self.scan_rows = soft_signal_rw(int, int(scan_shape[0]))
        self.scan_columns = soft_signal_rw(int, int(scan_shape[1]))
        setters: dict[str, Any] = {}
        self.acquisition_id, setters["acquisition_id"] = soft_signal_r_and_setter(str, "")
        self.state, setters["state"] = soft_signal_r_and_setter(str, "idle")
        self.frames_written, setters["frames_written"] = soft_signal_r_and_setter(int, 0)
        self.rows_written, setters["rows_written"] = soft_signal_r_and_setter(int, 0)
        self.file_uri, setters["file_uri"] = soft_signal_r_and_setter(str, "")
        self.detector, setters["detector"] = soft_signal_r_and_setter(str, "")
        self.calibration, setters["calibration"] = soft_signal_r_and_setter(str, "{}")
        self.scan_step, setters["scan_step"] = soft_signal_r_and_setter(
            Array1D[np.float64], np.zeros(2)
        )
        self.scan_unit, setters["scan_unit"] = soft_signal_r_and_setter(str, "")
        self.collections_written, setters["collections_written"] = soft_signal_r_and_setter(int, 0)
        # read live from the service on every get/read (GET /api/v1/status)
        self.service_state, _ = soft_signal_r_and_setter(str, "", getter=self._service_state)
        self._session = StemdaqSession(
            self.client, path_provider, overrides or {}, setters, self.collections_written
        )
        source = f"{self.client.url}/api/v1/acquisitions"
        self.add_detector_logics(
            StemdaqTriggerLogic(self._session, self.scan_rows, self.scan_columns),
            StemdaqAcquireLogic(self._session, self.scan_columns),
            StemdaqDataLogic(self._session, source),
        )
        self.add_config_signals(  # scan_rows, scan_columns: the trigger logic's
            self.acquisition_id,
            self.scan_step,
            self.scan_unit,
            self.detector,
            self.calibration,
            self.file_uri,
        )
        super().__init__(name=name)

    async def _service_state(self) -> str:
        return str((await self.client.status()).state)

    @property
    def session(self) -> StemdaqSession:
        """The REST side: segments (files), the current acquisition."""
        return self._session

    @WatchableAsyncStatus.wrap
    async def trigger(self) -> AsyncIterator[WatcherUpdate[int]]:
        """One acquisition of ``scan_rows`` x ``scan_columns``, one event with all its rows."""
        if self._prepare_ctx is None:
            rows = await self.scan_rows.get_value()
            await self.prepare(
                TriggerInfo(collections_per_event=rows, exposure_timeout=ROW_TIMEOUT)
            )
        async for update in self._unless_ended_short(super().trigger()):
            yield update

    @WatchableAsyncStatus.wrap
    async def complete(self) -> AsyncIterator[WatcherUpdate[int]]:
        """Until every row asked for is written and the file closed; raises
        :class:`AcquisitionEndedError` at once if the acquisition ends short of that."""
        async for update in self._unless_ended_short(super().complete()):
            yield update

    async def _unless_ended_short(
        self, status: WatchableAsyncStatus[int]
    ) -> AsyncIterator[WatcherUpdate[int]]:
        """The base class's progress updates, until ``status`` is done or the acquisition ended
        with fewer rows than asked for (then :class:`AcquisitionEndedError`, unless the device
        itself aborted it)."""
        updates: asyncio.Queue[WatcherUpdate[int]] = asyncio.Queue()
        # a Watcher gets the update's fields as keywords: rebuild the update
        status.watch(cast(Any, lambda **fields: updates.put_nowait(WatcherUpdate(**fields))))
        ended = asyncio.ensure_future(self._session.ended_short.wait())
        try:
            while True:
                update = asyncio.ensure_future(updates.get())
                done, _ = await asyncio.wait(
                    {status.task, ended, update}, return_when=asyncio.FIRST_COMPLETED
                )
                if update not in done:
                    update.cancel()
                    break
                yield update.result()
            while not updates.empty():
                yield updates.get_nowait()
        finally:
            ended.cancel()
        if status.done:
            await status
            return
        status.task.cancel()
        if self._session.stopped_by_device:  # abort_acquisition / unstage asked for this end
            return
        acq = self._session.current
        what = f"{acq.state.value} after {acq.rows_written} rows" if acq else "ended"
        raise AcquisitionEndedError(
            f"acquisition {self._session.current_id} {what} of {self._session.rows_requested}"
        )

    async def abort_acquisition(self) -> None:
        """Abort the running acquisition (if any) and wait until its file is closed."""
        await self._session.stop_running(abort=True)


def fly_rows(
    det: StemdaqDetector,
    rows: int,
    *,
    stream_name: str = "primary",
    flush_period: float = 0.5,
    md: dict[str, Any] | None = None,
) -> Generator[Any, Any, None]:
    """A fly scan of ``rows`` scan rows: one event per completed row, collected as they come.

    prepare -> kickoff (arms the acquisition) -> declare the stream -> complete while
    collecting every ``flush_period`` s. However it ends (also a RunEngine abort), the
    acquisition is aborted if still running and the rows written are collected, so the
    StreamDatum documents say how many rows the file holds.
    """

    @bpp.stage_decorator([det])
    @bpp.run_decorator(md={"detectors": [det.name], "scan_rows": rows, **(md or {})})
    def inner() -> Generator[Any, Any, None]:
        yield from bps.prepare(det, TriggerInfo(number_of_events=rows), wait=True)
        yield from bps.kickoff(det, wait=True)
        yield from bps.declare_stream(det, name=stream_name, collect=True)

        def collect_what_exists() -> Generator[Any, Any, None]:
            yield from bps.wait_for([det.abort_acquisition])
            yield from bps.collect(det, name=stream_name)

        yield from bpp.finalize_wrapper(
            bps.collect_while_completing(
                [det], [det], flush_period=flush_period, stream_name=stream_name
            ),
            collect_what_exists(),
        )

    yield from inner()
