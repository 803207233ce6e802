"""One rank's share of the live view, read by the service (:mod:`stemdaq.live.ranked`).

Routes::

    GET /rank/live                      this rank's live view: geometry, counts, state (JSON)
    GET /rank/live/maps.npz?since=V     the scan rows changed after version V that hold a
                                        filled position: ``rows``, ``raw`` (the reduced sums,
                                        rows x n_k x 5 float32) and ``filled``; the JSON of
                                        ``GET /rank/live`` rides in the ``X-Stemdaq-Live`` header
    GET /rank/live/sum_pattern.npy      the summed pattern so far (float64)
    PUT /rank/live/detectors            a geometry change (the service's validation; 422),
                                        ``?acquisition_id=``: only for that one (else 409)

All read the maps under their lock for a copy, as the service's WebSocket does; nothing here
touches the data thread. The service polls at most ``live_update_hz`` times a second, and only
for what changed, so a rank whose rows are all in sends a few hundred bytes per poll.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Response

from stemdaq.errors import BusyError, NotFoundError
from stemdaq.live.geometry import DetectorsRequest

#: the header of ``GET /rank/live/maps.npz`` that carries ``GET /rank/live``'s JSON
STATUS_HEADER = "X-Stemdaq-Live"
LIVE_ROUTES = (
    "/rank/live",
    "/rank/live/maps.npz",
    "/rank/live/sum_pattern.npy",
    "/rank/live/detectors",
)


def _engine(service: Any) -> Any:
    """The current acquisition's live engine (a ``SummaryAccumulator``), else 404."""
    acq = service.current
    engine = getattr(acq, "summary", None) if acq is not None else None
    if engine is None:
        raise NotFoundError(f"rank {service.index}: no live view (no frame yet)")
    return engine


def live_status(service: Any) -> dict[str, Any]:
    """This rank's live view in JSON (``GET /rank/live``)."""
    engine = _engine(service)
    acq = service.current
    maps = engine.maps
    return {
        "acquisition_id": acq.acq_id,
        "state": acq.state.value,
        "scan_shape": list(engine.scan_shape),
        "frame_shape": list(engine.frame_shape),
        "detectors": engine.detectors.as_dict(),
        "included": engine.included,
        "grid_step": engine.grid_step,
        "finished": engine.finished,
        "version": maps.version,
        "filled": maps.filled_count,
        "lowres_shape": list(maps.lowres_shape) if maps.lowres_shape else None,
    }


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def add_live_routes(app: FastAPI, service: Any) -> None:
    """Register the live routes of rank ``service`` (a ``RankService``) on ``app``."""

    @app.get("/rank/live")
    def get_rank_live() -> dict[str, Any]:
        """This rank's live view: geometry, positions in, sampling, state."""
        return live_status(service)

    @app.get("/rank/live/maps.npz", response_class=Response)
    def get_rank_live_maps(
        since: int = Query(-1, ge=-1, description="The version the caller has; -1: none"),
    ) -> Response:
        """The rows changed after ``since`` (npz: version, rows, raw, filled)."""
        engine = _engine(service)
        status = live_status(service)  # read first: its version is <= the rows' version
        version, rows, raw, filled = engine.maps.raw_rows_since(since)
        buf = io.BytesIO()
        np.savez(buf, version=np.int64(version), rows=rows, raw=raw, filled=filled)
        header = json.dumps(status, separators=(",", ":"))
        return Response(
            buf.getvalue(),
            media_type="application/octet-stream",
            headers={STATUS_HEADER: header},
        )

    @app.get("/rank/live/sum_pattern.npy", response_class=Response)
    def get_rank_sum_pattern() -> Response:
        """The summed pattern so far (float64, .npy)."""
        return Response(_npy(_engine(service).sum_pattern()), media_type="application/octet-stream")

    @app.put("/rank/live/detectors")
    def put_rank_detectors(
        change: DetectorsRequest,
        acquisition_id: str | None = Query(
            None, max_length=200, description="Refused (409) unless this rank holds it"
        ),
    ) -> dict[str, Any]:
        """Change this rank's virtual detectors (values not given stay); 422 when refused."""
        engine = _engine(service)
        held = service.current.acq_id
        if acquisition_id is not None and acquisition_id != held:
            raise BusyError(f"rank {service.index} holds acquisition {held}, not {acquisition_id}")
        det = engine.set_detectors(change)
        return dict(det.as_dict())
