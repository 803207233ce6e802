"""The live view of an acquisition written by N ranks: each rank's maps, merged.

Each rank reduces the frames it owns (its own ``SummaryAccumulator``); the service's live API
reads a :class:`RankedLiveEngine`, which :class:`~stemdaq.control.ranked.RankedAcquisition`
exposes as ``summary`` once a rank has maps. A thread of its own fetches, at most
``live_update_hz`` times a second, from every rank only the scan rows that changed since the
version it has (``GET /rank/live/maps.npz?since=V``, see :mod:`stemdaq.rank.live`) and puts
them into one :class:`MergedMaps` (a :class:`~stemdaq.live.maps.LiveMaps` without frames of its
own), so the routes and the WebSocket read it as they read one process' maps, never waiting on
the network. Ranks own disjoint rows: a row is taken where its rank filled it. The summed
pattern is fetched when asked for (the ranks' patterns add), at most as often.

A rank that dies keeps the maps last fetched from it; its missing rows stay unfilled. At the
end (:meth:`RankedLiveEngine.close`) each rank is read once more after it closed its file, so
the maps served equal those the master file takes from the rank files.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.control.cluster import RankCluster
from stemdaq.control.links import RankLinks
from stemdaq.errors import ConfigError, StemdaqError
from stemdaq.live.geometry import Detectors, DetectorsRequest
from stemdaq.live.maps import LiveMaps
from stemdaq.models import AcquisitionState
from stemdaq.threadnames import named
from stemdaq.writer.summary_reduce import AUTO_FRAMES

logger = logging.getLogger(__name__)

_TIMEOUT_S = 2.0  # a rank that does not answer in this keeps its last maps
_STATUS_HEADER = "X-Stemdaq-Live"  # stemdaq.rank.live.STATUS_HEADER (rank is below control)


class MergedMaps(LiveMaps):
    """The maps of every rank in one place: filled by :meth:`LiveMaps.put_rows`, read as any
    :class:`LiveMaps` (``images``, ``filled``, ``rows_since``)."""

    def __init__(
        self, scan_shape: tuple[int, int], frame_shape: tuple[int, int], detectors: Detectors
    ) -> None:
        super().__init__(scan_shape, frame_shape, detectors, lowres_bytes=0)
        self.ranks_lowres: tuple[int, int] | None = None

    @property
    def lowres_shape(self) -> tuple[int, int] | None:
        """The ranks' binned copy (each rank recomputes its own rows)."""
        return self.ranks_lowres


@dataclass
class _RankView:
    """What the engine last got from one rank."""

    version: int = -1
    status: dict[str, Any] | None = None
    final: bool = False  # read after its acquisition ended: its maps change no more
    pattern: np.ndarray | None = None
    fetch_s: float = 0.0  # the last fetch: seconds, bytes
    fetch_bytes: int = 0


def _detectors(d: Mapping[str, Any]) -> Detectors:
    cx, cy = d["center"]
    return Detectors(
        (float(cx), float(cy)), float(d["bf_radius"]), float(d["adf_inner"]), float(d["adf_outer"])
    )


class RankedLiveEngine:
    """The hub's ``LiveEngine`` for a ranked acquisition (module docstring).

    Parameters
    ----------
    cluster
        The ranks (their control URLs).
    acq_id
        The service's acquisition id; rank ``i`` holds ``<acq_id>/r<i:02d>``.
    config
        The acquisition's config (``scan_shape``, ``live_update_hz``).
    lost
        Ranks given up on (index -> why), kept up to date by the acquisition: not asked again.
    """

    def __init__(
        self,
        cluster: RankCluster,
        acq_id: str,
        config: AcquisitionConfig,
        lost: Mapping[int, str],
    ) -> None:
        self.scan_shape = (int(config.scan_shape[0]), int(config.scan_shape[1]))
        self.frame_shape: tuple[int, int] = (0, 0)  # known with the first maps
        self.maps: MergedMaps | None = None  # type: ignore[assignment]
        self._urls = list(cluster.rank_urls)
        self._acq_id = acq_id
        self._lost = lost
        self._period = 1.0 / config.live_update_hz
        self._links = RankLinks(cluster, acq_id)
        self._views = [_RankView() for _ in self._urls]
        self._round = threading.RLock()  # one fetch round or geometry change at a time
        self._pattern: np.ndarray | None = None
        self._pattern_at = -np.inf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.fetches = 0  # successful map fetches
        self.fetch_failures = 0
        self.aligned = 0  # ranks given rank 0's geometry

    # -- lifecycle (the acquisition's side) ------------------------------------------------------

    def start(self) -> None:
        """Start fetching, at most ``live_update_hz`` rounds a second."""
        self._thread = named(self._run, name=f"stemdaq-live-{self._acq_id}")
        self._thread.start()

    def close(self) -> None:
        """Stop fetching; read every rank not yet read in its final state once more."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self.refresh()
            self._pattern_at = -np.inf
            self.sum_pattern()  # the final patterns, kept (a rank may serve another scan next)
        self._closed = True
        # the connection pool stays: a geometry change after the scan still reaches the ranks

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                with self._round:
                    self.refresh()
                    self._align_geometry()
            except Exception:  # never take the acquisition down: the maps just stop updating
                logger.exception("acquisition %s: live view: fetching failed", self._acq_id)

    # -- LiveEngine (the API's side) -----------------------------------------------------------

    @property
    def detectors(self) -> Detectors:
        """The geometry of the lowest rank with maps (every rank gets the same changes)."""
        for view in self._views:
            if view.status is not None:
                return _detectors(view.status["detectors"])
        raise LookupError("no rank has maps yet")

    @property
    def included(self) -> int:
        """Frames in the ranks' sums."""
        return sum(int(v.status["included"]) for v in self._views if v.status is not None)

    @property
    def grid_step(self) -> int:
        """The coarsest sampling of the ranks (0: one of them takes no frames now)."""
        steps = [int(v.status["grid_step"]) for v in self._views if v.status is not None]
        return 0 if not steps or 0 in steps else max(steps)

    @property
    def finished(self) -> bool:
        """True once the acquisition ended and every rank was read after its end."""
        return self._closed

    def sum_pattern(self) -> np.ndarray:
        """The ranks' summed patterns added (each fetched at most ``live_update_hz`` times a
        second; a rank that does not answer counts with its last)."""
        now = time.monotonic()
        if self._pattern is not None and (self._closed or now - self._pattern_at < self._period):
            return self._pattern.copy()
        total = np.zeros(self.frame_shape, dtype=np.float64)
        for i, (url, view) in enumerate(zip(self._urls, self._views, strict=True)):
            if i not in self._lost and not (self._closed and view.pattern is not None):
                try:
                    resp = self._links.get_response(
                        url + "/rank/live/sum_pattern.npy", timeout=_TIMEOUT_S
                    )
                    if resp.status_code == 200:
                        view.pattern = np.load(io.BytesIO(resp.content), allow_pickle=False)
                except (httpx.HTTPError, ValueError) as exc:
                    logger.debug("live view: rank %d's pattern: %s", i, exc)
            if view.pattern is not None and view.pattern.shape == total.shape:
                total += view.pattern
        self._pattern, self._pattern_at = total, now
        return total.copy()

    def set_detectors(self, change: DetectorsRequest) -> Detectors:
        """Apply ``change`` on every rank (the first that answers validates it: a refusal
        there changes nothing anywhere); the maps are fetched again at once.

        Raises
        ------
        ConfigError
            A rank refused it (named), or a rank after the first did not take it.
        """
        body = change.model_dump(mode="json", exclude_unset=True)
        done: list[int] = []
        result: Detectors | None = None
        with self._round:
            for i in range(len(self._urls)):
                if i in self._lost:
                    continue
                try:
                    answer = self._put_detectors(i, body)
                except StemdaqError as exc:
                    if not done:
                        raise
                    raise ConfigError(
                        f"geometry applied on rank(s) {done} but not on rank {i}: {exc}"
                    ) from None
                done.append(i)
                result = result or _detectors(answer)
            if result is None:
                raise ConfigError("no rank left to take the geometry")
            self.refresh(force=True)
        return result

    def _put_detectors(self, index: int, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT /rank/live/detectors`` to rank ``index``, for this acquisition only."""
        held = quote(self._rank_acq(index), safe="")
        url = f"{self._urls[index]}/rank/live/detectors?acquisition_id={held}"
        return self._links.send("PUT", url, f"rank {index}", body)

    def _rank_acq(self, index: int) -> str:
        return f"{self._acq_id}/r{index:02d}"

    # -- fetching ------------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """One round: every rank not lost (and, unless ``force``, not read after its end)."""
        with self._round:
            for i, view in enumerate(self._views):
                if i in self._lost or (view.final and not force):
                    continue
                self._fetch(i, view)

    def _align_geometry(self) -> None:
        """Give every rank rank 0's geometry where it differs (a geometry not in the config is
        found by each rank in its own first frames: the merged maps need one), once rank 0 has
        found its own (AUTO_FRAMES frames in). The others recompute from their binned copy."""
        ref = self._views[0].status
        if ref is None or 0 in self._lost or ref["state"] != AcquisitionState.ACQUIRING.value:
            return
        if int(ref["included"]) < AUTO_FRAMES:
            return
        for i, view in enumerate(self._views[1:], start=1):
            s = view.status
            if i in self._lost or s is None or s["detectors"] == ref["detectors"]:
                continue
            if s["state"] != AcquisitionState.ACQUIRING.value:
                continue  # its file may be closing: the maps there stay as they are
            try:
                self._put_detectors(i, ref["detectors"])
            except StemdaqError as exc:
                logger.warning("live view: rank %d keeps its own geometry: %s", i, exc)
                continue
            logger.info("live view: rank %d takes rank 0's geometry %s", i, ref["detectors"])
            self.aligned += 1

    def fetch_cost(self) -> tuple[float, int]:
        """(seconds, bytes) of the last fetch, summed over the ranks (the docs' measurement)."""
        return sum(v.fetch_s for v in self._views), sum(v.fetch_bytes for v in self._views)

    def _fetch(self, index: int, view: _RankView) -> None:
        url = self._urls[index] + "/rank/live/maps.npz"
        t0 = time.perf_counter()
        try:
            resp = self._links.get_response(url, {"since": view.version}, timeout=_TIMEOUT_S)
        except httpx.HTTPError as exc:
            self.fetch_failures += 1
            logger.debug("live view: rank %d does not answer: %s", index, exc)
            return
        if resp.status_code != 200:  # 404: no frame yet
            return
        status = json.loads(resp.headers[_STATUS_HEADER])
        if status.get("acquisition_id") != self._rank_acq(index):
            return  # another acquisition's maps
        with np.load(io.BytesIO(resp.content), allow_pickle=False) as npz:
            version, rows, raw, filled = (npz[k] for k in ("version", "rows", "raw", "filled"))
        maps = self.maps
        if maps is None:
            frame = (int(status["frame_shape"][0]), int(status["frame_shape"][1]))
            self.frame_shape = frame
            maps = MergedMaps(self.scan_shape, frame, _detectors(status["detectors"]))
        maps.put_rows(rows, raw, filled)
        view.version = int(version)
        view.status = status
        view.final = AcquisitionState(status["state"]).is_final
        view.fetch_s, view.fetch_bytes = time.perf_counter() - t0, len(resp.content)
        maps.detectors = self.detectors
        lowres = status.get("lowres_shape")
        maps.ranks_lowres = (int(lowres[0]), int(lowres[1])) if lowres else None
        self.maps = maps  # published last: the hub sees maps only once they hold a rank's
        self.fetches += 1
