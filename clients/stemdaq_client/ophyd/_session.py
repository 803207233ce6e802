"""The device's side of the REST API: arm, follow (long-poll, no busy polling), abort.

One :class:`StemdaqSession` per detector. Each acquisition it arms becomes a :class:`Segment`: a
file, its rows, and the StreamResource that describes it. A background task follows the running
acquisition with ``GET .../wait?rows_written_ge=N`` and feeds the soft signals.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import Any

import numpy as np
from event_model import ComposeStreamResourceBundle
from ophyd_async.core import PathProvider, SignalR

from stemdaq_client._client import AsyncClient, file_template_for
from stemdaq_client.errors import Conflict
from stemdaq_client.models import Acquisition

logger = logging.getLogger(__name__)

_POLL = 10.0  # seconds per long-poll (the server answers within ~1 s of each new row)
_FILING = 10.0  # seconds a new arm waits for the service to file this device's previous one
_SUFFIXES = (".nxs", ".h5", ".hdf5", ".nx5")


@dataclass
class Segment:
    """One acquisition (one file) inside the current prepare: rows ``base .. base + rows``."""

    acq_id: str
    uri: str
    base: int
    rows: int = 0
    emitted: int = 0  # event indices already covered by StreamDatum documents
    bundle: ComposeStreamResourceBundle | None = None


class StemdaqSession:
    """Arms acquisitions through the REST API and keeps the device's signals up to date.

    Parameters
    ----------
    client
        The async REST client.
    path_provider
        ophyd-async's PathProvider: its directory (inside the server's data directory, as
        the server names it: ``data_dir`` of ``GET /api/v1/status``) and filename (``.nxs``
        added if it has no suffix) name each acquisition's file; the server refuses names
        outside the data directory and existing files (422).
    overrides
        Per-acquisition config changes sent with every arm (e.g. ``scan_step``).
    setters
        Setters of the device's soft signals, by name.
    collections_written
        The signal the setter ``collections_written`` feeds: rows over this prepare.
    """

    def __init__(
        self,
        client: AsyncClient,
        path_provider: PathProvider,
        overrides: dict[str, Any],
        setters: dict[str, Callable[[Any], None]],
        collections_written: SignalR[int],
    ) -> None:
        self.client = client
        self.collections_written_signal = collections_written
        self.path_provider = path_provider
        self.overrides = dict(overrides)
        self._set = setters
        self.segments: list[Segment] = []
        self.current: Acquisition | None = None
        self.rows_requested = 0
        self.datakey_name = ""
        self._follower: asyncio.Task[None] | None = None
        self.ended_short = asyncio.Event()
        self.stopped_by_device = False  # the device itself stopped/aborted the acquisition

    # -- prepare ----------------------------------------------------------------------------

    def reset(self, datakey_name: str) -> None:
        """A new prepare: no segments yet, collections start at 0."""
        self.datakey_name = datakey_name
        self.segments = []
        self._set["collections_written"](0)

    @property
    def collections_written(self) -> int:
        """Rows written over every acquisition of this prepare."""
        return sum(seg.rows for seg in self.segments)

    # -- arm / follow / stop ----------------------------------------------------------------

    async def arm(self, rows: int, columns: int) -> Acquisition:
        """Arm one acquisition of ``rows`` x ``columns`` into the PathProvider's file."""
        if self._follower is not None and not self._follower.done():
            raise RuntimeError(f"acquisition {self.current_id} is still running")
        info = self.path_provider(self.datakey_name)
        directory = await self._relative_directory(info.directory_path)
        name = info.filename if info.filename.endswith(_SUFFIXES) else info.filename + ".nxs"
        body = {
            **self.overrides,
            "scan_shape": [rows, columns],
            "file_template": file_template_for(directory, name),
        }
        acq = await self._arm(body)
        logger.info("armed stemdaq acquisition %s -> %s", acq.id, acq.file_path)
        self.rows_requested = rows
        self.ended_short.clear()
        self.stopped_by_device = False
        self.segments.append(Segment(acq.id, acq.file_uri, base=self.collections_written))
        self._update(acq)
        self._follower = asyncio.create_task(self._follow(acq.id), name=f"stemdaq-{acq.id}")
        return acq

    async def _arm(self, body: dict[str, Any]) -> Acquisition:
        """``POST /acquisitions``; a 409 while the service is still filing the acquisition before
        (final already, its slot freed once its record is written, a fraction of a second later)
        is retried for up to ``_FILING`` s. A 409 for an acquisition still recording is raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FILING
        delay = 0.02
        while True:
            try:
                return await self.client.arm(body)
            except Conflict:
                running = (await self.client.status()).acquisition
                filing = running is not None and running.state.is_final
                if not filing or loop.time() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 2)

    async def _relative_directory(self, directory: PurePath) -> str:
        """``directory`` relative to the server's data directory (the server checks the rest)."""
        path = PurePosixPath(directory)
        if not path.is_absolute():
            return str(path)
        root = PurePosixPath((await self.client.status()).data_dir)
        if not path.is_relative_to(root):
            raise ValueError(
                f"{directory} is not inside the stemdaq server's data directory {root}"
            )
        relative = str(path.relative_to(root))
        return "" if relative == "." else relative

    @property
    def current_id(self) -> str:
        return self.current.id if self.current is not None else ""

    async def _follow(self, acq_id: str) -> None:
        """Long-poll the running acquisition until it is final."""
        seg = self.segments[-1]
        while True:
            try:
                acq = await self.client.wait_written(
                    acq_id, rows_written_ge=seg.rows + 1, timeout=_POLL
                )
            except Exception as exc:  # the server went away: keep trying, the plan decides
                logger.warning("following %s: %s", acq_id, exc)
                await asyncio.sleep(1.0)
                continue
            self._update(acq)
            if acq.state.is_final:
                if seg.rows < self.rows_requested:
                    self.ended_short.set()
                return

    def _update(self, acq: Acquisition) -> None:
        seg = self.segments[-1]
        seg.rows = max(seg.rows, acq.rows_written)  # monotonic, whatever order answers came in
        if seg.bundle is None:  # not described yet: name the file as it exists (or will)
            seg.uri = acq.file_uri
        self.current = acq
        cfg = acq.config
        calibration = cfg.get("calibration") or {}
        self._set["acquisition_id"](acq.id)
        self._set["state"](acq.state.value)
        self._set["frames_written"](acq.frames_written)
        self._set["rows_written"](seg.rows)
        self._set["file_uri"](acq.file_uri)
        self._set["detector"](acq.detector_protocol or "passive (stream only)")
        self._set["calibration"](json.dumps(calibration, sort_keys=True))
        if "scan_step" in cfg:
            self._set["scan_step"](np.asarray(cfg["scan_step"], dtype=np.float64))
        if "scan_unit" in cfg:
            self._set["scan_unit"](str(cfg["scan_unit"]))
        self._set["collections_written"](self.collections_written)

    async def wait_final(self) -> Acquisition | None:
        """Until the running acquisition (if any) is final; its last state."""
        if self._follower is not None:
            await asyncio.shield(self._follower)
        return self.current

    async def wait_for_shape(self) -> Acquisition:
        """The current acquisition once its frame shape and dtype are known (series started)."""
        acq = self.current
        if acq is None:
            raise RuntimeError("no stemdaq acquisition armed yet: kickoff or trigger first")
        while acq.frame_shape is None or acq.dtype is None or acq.chunk_shape is None:
            if acq.state.is_final:
                raise RuntimeError(
                    f"acquisition {acq.id} ended ({acq.state.value}) before its series started: "
                    f"{acq.error or 'no frames'}"
                )
            acq = await self.client.wait_written(acq.id, frames_written_ge=1, timeout=_POLL)
        return acq

    async def stop_running(self, *, abort: bool) -> None:
        """Abort (or stop) the running acquisition, if any, and wait until it is final."""
        acq = self.current
        if acq is None or self._follower is None or self._follower.done():
            return
        self.stopped_by_device = True
        if abort:
            await self.client.abort(acq.id)
        else:
            await self.client.stop(acq.id)
        await self.wait_final()

    async def close(self) -> None:
        """Stop following (the acquisition itself is left as it is)."""
        if self._follower is not None and not self._follower.done():
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
