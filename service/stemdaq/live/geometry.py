"""Virtual detector geometry: beam centre, bright-field disk, annular dark-field ring.

A user gives any of the values (config ``live_*`` fields, ``PUT /api/v1/live/detectors``); the
rest are found: the centre from the calibration's ``beam_center``, else from the summed pattern's
centre of mass, else the frame centre; the disk radius from the summed pattern (the area above
half its maximum, as a disk); the annulus from the disk (inner 1.5 x, outer 3 x its radius,
within the frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stemdaq.config import AcquisitionConfig
from stemdaq.errors import ConfigError

_INNER = 1.5  # default annulus inner radius, in disk radii
_OUTER = 3.0  # default annulus outer radius, in disk radii


class DetectorsRequest(BaseModel):
    """A change of the virtual detectors (``PUT /api/v1/live/detectors``); null: found."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    center: tuple[float, float] | None = Field(
        None, description="Beam centre (x, y) on the detector, pixels"
    )
    bf_radius: float | None = Field(None, gt=0, description="Bright-field disk radius, pixels")
    adf_inner: float | None = Field(None, ge=0, description="ADF annulus inner radius, pixels")
    adf_outer: float | None = Field(None, gt=0, description="ADF annulus outer radius, pixels")

    @model_validator(mode="after")
    def _ordered(self) -> DetectorsRequest:
        if (
            self.adf_inner is not None
            and self.adf_outer is not None
            and self.adf_inner >= self.adf_outer
        ):
            raise ValueError("adf_inner must be smaller than adf_outer")
        return self


@dataclass(frozen=True)
class Detectors:
    """Resolved geometry, all in detector pixels; ``center`` is (x, y)."""

    center: tuple[float, float]
    bf_radius: float
    adf_inner: float
    adf_outer: float

    def as_dict(self) -> dict[str, object]:
        """JSON form (the API and the file)."""
        return {
            "center": [self.center[0], self.center[1]],
            "bf_radius": self.bf_radius,
            "adf_inner": self.adf_inner,
            "adf_outer": self.adf_outer,
        }


def check_in_frame(req: DetectorsRequest, frame_shape: tuple[int, int]) -> None:
    """Raise :class:`ConfigError` when the geometry does not fit a frame of ``frame_shape``."""
    ny, nx = frame_shape
    diag = math.hypot(ny, nx)
    if req.center is not None:
        x, y = req.center
        if not (0 <= x <= nx - 1 and 0 <= y <= ny - 1):
            raise ConfigError(f"center {list(req.center)} is outside the {nx}x{ny} frame")
    for name in ("bf_radius", "adf_inner", "adf_outer"):
        value = getattr(req, name)
        if value is not None and value > diag:
            raise ConfigError(f"{name} {value} is larger than the frame ({diag:.0f} pixels)")


def resolve(
    frame_shape: tuple[int, int],
    given: DetectorsRequest,
    beam_center: tuple[float, float] | None = None,
    pattern: np.ndarray | None = None,
) -> Detectors:
    """The geometry: ``given`` values, then ``beam_center``, then found in ``pattern``."""
    ny, nx = frame_shape
    found_center, found_radius = find_disk(pattern) if pattern is not None else (None, None)
    center = given.center or beam_center or found_center or ((nx - 1) / 2.0, (ny - 1) / 2.0)
    radius = given.bf_radius or found_radius or max(1.0, min(ny, nx) / 8.0)
    edge = max(2.0, math.hypot(ny, nx) / 2.0)
    inner = given.adf_inner if given.adf_inner is not None else _INNER * radius
    outer = given.adf_outer if given.adf_outer is not None else max(inner + 1.0, _OUTER * radius)
    if given.adf_outer is None:
        outer = max(inner + 1.0, min(outer, edge))
    return Detectors(
        (float(center[0]), float(center[1])), float(radius), float(inner), float(outer)
    )


def find_disk(pattern: np.ndarray) -> tuple[tuple[float, float] | None, float | None]:
    """Centre (x, y) and radius of the bright-field disk in a summed pattern, or None.

    The disk is the pixels above half the pattern's maximum (a robust top: the 99.9th
    percentile); its centre is their intensity-weighted centre of mass, its radius
    ``sqrt(area / pi)``.
    """
    p = np.asarray(pattern, dtype=np.float64)
    if p.size == 0 or not np.isfinite(p).all():
        return None, None
    flat = p.ravel()
    k = min(flat.size - 1, int(flat.size * 0.999))
    top = float(np.partition(flat, k)[k])  # the 99.9th percentile (np.percentile: 15 ms)
    if top <= 0:
        return None, None
    disk = p >= 0.5 * top
    n = int(disk.sum())
    if n < 3:
        return None, None
    yy, xx = np.nonzero(disk)
    w = p[yy, xx]
    cx = float((xx * w).sum() / w.sum())
    cy = float((yy * w).sum() / w.sum())
    return (cx, cy), float(math.sqrt(n / math.pi))


def given_by_config(config: AcquisitionConfig | None) -> DetectorsRequest:
    """The geometry the config gives (``live_*``); missing values are found later."""
    if config is None:
        return DetectorsRequest()
    return DetectorsRequest(
        center=config.live_center,
        bf_radius=config.live_bf_radius,
        adf_inner=config.live_adf_inner,
        adf_outer=config.live_adf_outer,
    )
