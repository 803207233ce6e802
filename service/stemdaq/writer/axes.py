"""Axis coordinates: scan positions (NX_LENGTH) and detector pixels (NX_WAVENUMBER or pixels).

Reciprocal-space coordinates use the crystallographic convention ``q = theta / lambda`` (no
factor 2 pi), in 1/nm, with the small-angle approximation ``theta = pixel_size / camera_length``
per pixel: the axes are linear, as NXdata axes of a regular grid should be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stemdaq.config import LENGTH_UNITS, AcquisitionConfig
from stemdaq.models import DetectorInfo
from stemdaq.writer.layout import Axis

# CODATA 2018
_H = 6.62607015e-34  # Planck constant, J s
_M0 = 9.1093837015e-31  # electron rest mass, kg
_E = 1.602176634e-19  # elementary charge, C
_C = 299792458.0  # speed of light, m/s

#: the unit string written for each length unit of the configuration
LENGTH_UNIT_NAMES = {"m": "m", "um": "um", "nm": "nm", "angstrom": "angstrom"}
WAVENUMBER_UNITS = "1/nm"
UNCALIBRATED_UNITS = ""  # NX_UNITLESS


def electron_wavelength(energy_ev: float) -> float:
    """Relativistic electron wavelength in metres for a kinetic energy in eV (200 keV: 2.508 pm)."""
    if energy_ev <= 0:
        raise ValueError(f"beam energy must be positive, got {energy_ev}")
    e_j = _E * energy_ev
    return _H / math.sqrt(2 * _M0 * e_j * (1 + e_j / (2 * _M0 * _C**2)))


@dataclass(frozen=True)
class DetectorGeometry:
    """Resolved calibration of the diffraction axes (what was used, for the file)."""

    reciprocal_pixel_size: float | None  # 1/nm per pixel, None when uncalibrated
    beam_center: tuple[float, float]  # (x, y) pixels
    pixel_size: float | None  # m
    camera_length: float | None  # m
    beam_energy: float | None  # eV
    wavelength: float | None  # m
    #: where each value came from: "config" (given explicitly), "stream" (the start message),
    #: "detector" (SIMPLON config read before arming), "derived", "frame centre" or "none"
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def calibrated(self) -> bool:
        """True when the detector axes are in 1/nm."""
        return self.reciprocal_pixel_size is not None


def resolve_geometry(
    config: AcquisitionConfig,
    detector: DetectorInfo,
    frame_shape: tuple[int, int],
    simplon: DetectorInfo | None = None,
) -> DetectorGeometry:
    """Calibration: explicit config first, then the stream's start message, then the detector's
    SIMPLON config read before arming (``simplon``); each value remembers its source."""
    cal = config.calibration
    fallback = simplon or DetectorInfo()
    sources: dict[str, str] = {}

    def positive(value: float | None) -> float | None:  # a stream's 0 or -1 means "not known"
        return value if value is not None and math.isfinite(value) and value > 0 else None

    def pick(
        name: str, explicit: float | None, stream: float | None, simp: float | None
    ) -> float | None:
        for source, value in (("config", explicit), ("stream", stream), ("detector", simp)):
            if positive(value) is not None:
                sources[name] = source
                return value
        sources[name] = "none"
        return None

    pixel = pick("pixel_size", cal.pixel_size, detector.pixel_size_x, fallback.pixel_size_x)
    length = pick(
        "camera_length", cal.camera_length, detector.detector_distance, fallback.detector_distance
    )
    energy = pick(
        "beam_energy", cal.beam_energy, detector.incident_energy, fallback.incident_energy
    )
    if cal.beam_center is not None:
        center = (float(cal.beam_center[0]), float(cal.beam_center[1]))
        sources["beam_center"] = "config"
    elif detector.beam_center_x is not None and detector.beam_center_y is not None:
        center = (float(detector.beam_center_x), float(detector.beam_center_y))
        sources["beam_center"] = "stream"
    elif fallback.beam_center_x is not None and fallback.beam_center_y is not None:
        center = (float(fallback.beam_center_x), float(fallback.beam_center_y))
        sources["beam_center"] = "detector"
    else:
        center = ((frame_shape[1] - 1) / 2.0, (frame_shape[0] - 1) / 2.0)
        sources["beam_center"] = "frame centre"
    wavelength = electron_wavelength(energy) if energy else None
    recip = cal.reciprocal_pixel_size
    sources["reciprocal_pixel_size"] = "config" if recip is not None else "none"
    if recip is None and pixel and length and wavelength:
        recip = (pixel / length) / wavelength * 1e-9  # 1/m -> 1/nm
        sources["reciprocal_pixel_size"] = "derived: pixel_size / camera_length / wavelength"
    return DetectorGeometry(
        recip, center, pixel, length, energy, wavelength, tuple(sorted(sources.items()))
    )


def detector_axes(geometry: DetectorGeometry, frame_shape: tuple[int, int]) -> dict[str, Axis]:
    """``axis_j``, ``axis_i``: 1/nm centred on the beam centre, or pixel indices (NX_UNITLESS)."""
    ny, nx = frame_shape
    if geometry.reciprocal_pixel_size is None:
        return {
            "axis_j": Axis(
                np.arange(ny, dtype=np.float64),
                UNCALIBRATED_UNITS,
                "detector y, pixel index (uncalibrated)",
            ),
            "axis_i": Axis(
                np.arange(nx, dtype=np.float64),
                UNCALIBRATED_UNITS,
                "detector x, pixel index (uncalibrated)",
            ),
        }
    d = geometry.reciprocal_pixel_size
    cx, cy = geometry.beam_center
    return {
        "axis_j": Axis((np.arange(ny) - cy) * d, WAVENUMBER_UNITS, "reciprocal space q_y (1/nm)"),
        "axis_i": Axis((np.arange(nx) - cx) * d, WAVENUMBER_UNITS, "reciprocal space q_x (1/nm)"),
    }


def scan_axes(config: AcquisitionConfig) -> dict[str, Axis]:
    """``axis_m``, ``axis_k``: scan positions ``origin + step * index`` in ``config.scan_unit``."""
    n_m, n_k = config.scan_shape
    unit = config.scan_unit
    if unit not in LENGTH_UNITS:  # pragma: no cover - the config validates it
        raise ValueError(f"unknown length unit {unit!r}")
    name = LENGTH_UNIT_NAMES[unit]
    return {
        "axis_m": Axis(
            config.scan_origin[0] + config.scan_step[0] * np.arange(n_m, dtype=np.float64),
            name,
            f"scan position y ({name})",
        ),
        "axis_k": Axis(
            config.scan_origin[1] + config.scan_step[1] * np.arange(n_k, dtype=np.float64),
            name,
            f"scan position x ({name})",
        ),
    }
