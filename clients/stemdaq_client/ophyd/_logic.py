"""ophyd-async 0.21 logics for stemdaq: trigger (rows), acquire (REST arm/abort), data (documents).

One *collection* is one complete scan row of the 4D dataset ``[n_m, n_k, ny, nx]``: a fly scan
prepared with ``TriggerInfo(number_of_events=n_m)`` emits one event per row (datum
``[n_k, ny, nx]``, descriptor shape ``[1, n_k, ny, nx]``: ophyd-async's leading
collections-per-event axis), a step scan (``trigger``) one event per acquisition of ``n_m`` rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import numpy as np
from bluesky.protocols import StreamAsset
from event_model import DataKey, compose_stream_resource
from ophyd_async.core import (
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    SignalR,
    SignalRW,
    StreamableDataProvider,
)

from stemdaq_client.ophyd._session import StemdaqSession

MIMETYPE = "application/x-hdf5"


class AcquisitionEndedError(RuntimeError):
    """The acquisition ended (aborted, failed, or stopped) before every row asked for."""


class StemdaqTriggerLogic(DetectorTriggerLogic):
    """Internal triggering only: the service arms and triggers the detector (active mode) or
    records what the stream sends (passive mode). Each exposure is one scan row."""

    def __init__(
        self, session: StemdaqSession, scan_rows: SignalRW[int], scan_columns: SignalRW[int]
    ) -> None:
        self.session = session
        self.scan_rows = scan_rows
        self.scan_columns = scan_columns

    def config_sigs(self) -> set[SignalR]:
        return {self.scan_rows, self.scan_columns}

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        if livetime or deadtime:
            raise ValueError(
                "stemdaq takes the exposure from the detector's configuration: prepare with "
                "livetime=0 and deadtime=0"
            )
        self.session.rows_requested = num
        await self.scan_rows.set(num)  # what read_configuration reports: the rows recorded


class StemdaqAcquireLogic(DetectorAcquireLogic):
    """Arm through ``POST /acquisitions``, wait for the end, abort at unstage."""

    def __init__(self, session: StemdaqSession, scan_columns: SignalR[int]) -> None:
        self.session = session
        self.scan_columns = scan_columns

    async def ensure_ready(self) -> None:
        await self.session.stop_running(abort=True)

    async def start_acquiring(self) -> None:
        rows = self.session.rows_requested
        if rows < 1:
            raise ValueError("prepare the detector first (number of scan rows unknown)")
        await self.session.arm(rows, await self.scan_columns.get_value())

    async def wait_for_idle(self) -> None:
        acq = await self.session.wait_final()
        if acq is not None and acq.state.value not in ("completed", "completed_with_gaps"):
            raise AcquisitionEndedError(
                f"acquisition {acq.id} {acq.state.value}: {acq.error or 'see its warnings'}"
            )

    async def ensure_stopped(self) -> None:
        await self.session.stop_running(abort=True)


class StemdaqStreamProvider(StreamableDataProvider):
    """StreamResource per acquisition (file), StreamDatum per event as rows complete."""

    def __init__(self, session: StemdaqSession, datakey_name: str, source: str) -> None:
        self.session = session
        self.datakey_name = datakey_name
        self.source = source
        self.collections_written_signal = session.collections_written_signal

    async def make_datakeys(self, collections_per_event: int) -> dict[str, DataKey]:
        acq = await self.session.wait_for_shape()  # frame_shape, dtype and chunks are known
        n_k = int(acq.config.get("scan_shape", acq.shape or [0, 0])[1])
        return {
            self.datakey_name: DataKey(
                source=self.source,
                shape=[collections_per_event, n_k, *(acq.frame_shape or [])],
                dtype="array",
                dtype_numpy=np.dtype(acq.dtype or "uint16").str,
                external="STREAM:",
            )
        }

    async def make_stream_docs(
        self, collections_written: int, collections_per_event: int
    ) -> AsyncIterator[StreamAsset]:
        for seg in self.session.segments:
            covered = max(0, min(seg.rows, collections_written - seg.base))
            indices = covered // collections_per_event
            if indices <= seg.emitted:
                continue
            if seg.bundle is None:
                acq = await self.session.wait_for_shape()
                seg.bundle = compose_stream_resource(
                    mimetype=MIMETYPE,
                    uri=seg.uri,
                    data_key=self.datakey_name,
                    parameters={
                        "dataset": acq.dataset_path,
                        "swmr": True,
                        "chunk_shape": list(acq.chunk_shape or ()),
                    },
                )
                yield "stream_resource", seg.bundle.stream_resource_doc
            yield (
                "stream_datum",
                seg.bundle.compose_stream_datum({"start": seg.emitted, "stop": indices}),
            )
            seg.emitted = indices


class StemdaqDataLogic(DetectorDataLogic):
    """The 4D intensity dataset of each acquisition's NeXus file."""

    def __init__(self, session: StemdaqSession, source: str) -> None:
        self.session = session
        self.source = source

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        self.session.reset(datakey_name)
        return StemdaqStreamProvider(self.session, datakey_name, self.source)

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        return [datakey_name]
