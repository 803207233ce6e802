"""The running or last acquisition's live view, as the API sees it.

The app wraps the acquisition factory (:meth:`LiveHub.wrap`), so the hub knows each acquisition
it builds, with its config, and keeps the newest one after it is filed: the maps of the last
scan stay on the page and in the API until the next acquisition starts. The maps themselves
live in the acquisition's summary thread (``SummaryAccumulator``, created at the first frame);
nothing here runs per frame.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.live.geometry import Detectors, DetectorsRequest
from stemdaq.live.maps import MAP_NAMES, LiveMaps

#: every map the API serves: scan-shaped ones and the summed pattern
ALL_MAPS = (*MAP_NAMES, "sum_pattern")


class LiveEngine(Protocol):
    """What the hub needs from the live view's engine (``writer.summary.SummaryAccumulator``)."""

    maps: LiveMaps
    scan_shape: tuple[int, int]
    frame_shape: tuple[int, int]

    @property
    def detectors(self) -> Detectors: ...
    @property
    def included(self) -> int: ...
    @property
    def grid_step(self) -> int: ...
    @property
    def finished(self) -> bool: ...
    def sum_pattern(self) -> np.ndarray: ...
    def set_detectors(self, change: DetectorsRequest) -> Detectors: ...


@dataclass
class LiveSource:
    """One acquisition's live view: its id, its config, its engine (None before a frame)."""

    acq_id: str
    config: AcquisitionConfig
    acquisition: Any

    @property
    def engine(self) -> LiveEngine | None:
        """The engine, once the first frame arrived (and with ``summary`` on)."""
        engine: LiveEngine | None = getattr(self.acquisition, "summary", None)
        return engine


class LiveHub:
    """Knows the newest acquisition the service built, for the live routes."""

    def __init__(self) -> None:
        self._latest: LiveSource | None = None
        self.refused = 0  # geometry changes refused (outside the frame, empty annulus)

    def wrap(self, factory: Callable[..., Any] | None) -> Callable[..., Any]:
        """A factory that builds with ``factory`` (default: ``Acquisition``) and remembers."""

        def build(config: AcquisitionConfig, file_path: Any, **kwargs: Any) -> Any:
            make = factory
            if make is None:
                from stemdaq.acquisition import Acquisition

                make = Acquisition
            acq = make(config, file_path, **kwargs)
            self._latest = LiveSource(str(kwargs.get("acq_id", "")), config, acq)
            return acq

        return build

    @property
    def latest(self) -> LiveSource | None:
        """The newest acquisition built (running or finished), if any."""
        return self._latest


def image_of(engine: LiveEngine, name: str) -> np.ndarray:
    """The map ``name`` (float32, NaN where not filled), or the summed pattern (float64)."""
    if name == "sum_pattern":
        return engine.sum_pattern()
    return engine.maps.images()[name]


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` in NumPy's .npy format."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
