"""SIMPLON configuration parameters of the simulated detector, with their types and limits.

A :class:`ConfigStore` holds one module's values (``detector`` or ``stream``), validates a
``PUT`` and returns the list of parameters it changed, as SIMPLON does (setting
``incident_energy`` also changes ``wavelength`` and ``threshold_energy``; ``roi_mode`` changes the
frame size; ``frame_time`` below ``count_time`` pulls ``count_time`` down).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from stemdaq.errors import ConfigError

SIMPLON_VERSION = "1.8.0"
#: API versions the simulator can present; 1.6 (EIGER1-class) streams v1 only
SIMPLON_VERSIONS = ("1.8.0", "1.6.0")
V1_ONLY_VERSIONS = ("1.6.0",)
BIT_DEPTH_DTYPE = {8: "uint8", 16: "uint16", 32: "uint32"}
DTYPE_BIT_DEPTH = {v: k for k, v in BIT_DEPTH_DTYPE.items()}


class ParamNotFoundError(LookupError):
    """No such parameter (HTTP 404)."""


@dataclass(frozen=True)
class Param:
    """One parameter: SIMPLON ``value_type`` (string/float/uint/int/bool), access, limits."""

    value_type: str
    default: Any
    access_mode: str = "rw"
    unit: str = ""
    min: float | None = None
    max: float | None = None
    allowed_values: tuple[Any, ...] | None = None

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` converted to the parameter's type, or raise :class:`ConfigError`."""
        if self.access_mode == "r":
            raise ConfigError(f"{name} is read-only")
        vt = self.value_type
        if vt == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{name} expects a bool, got {value!r}")
        elif vt in ("uint", "int"):
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise ConfigError(f"{name} expects an integer, got {value!r}")
            value = int(value)
        elif vt == "float":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ConfigError(f"{name} expects a number, got {value!r}")
            value = float(value)
        elif not isinstance(value, str):
            raise ConfigError(f"{name} expects a string, got {value!r}")
        if self.allowed_values is not None and value not in self.allowed_values:
            raise ConfigError(f"{name}={value!r} not one of {list(self.allowed_values)}")
        if self.min is not None and value < self.min:
            raise ConfigError(f"{name}={value!r} below minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"{name}={value!r} above maximum {self.max}")
        return value

    def describe(self, value: Any) -> dict[str, Any]:
        """The SIMPLON ``GET .../config/{param}`` body."""
        body: dict[str, Any] = {
            "value": value,
            "value_type": self.value_type,
            "access_mode": self.access_mode,
            "unit": self.unit,
        }
        if self.min is not None:
            body["min"] = self.min
        if self.max is not None:
            body["max"] = self.max
        if self.allowed_values is not None:
            body["allowed_values"] = list(self.allowed_values)
        return body


def electron_wavelength_angstrom(energy_ev: float) -> float:
    """Relativistic electron wavelength in angstrom for a kinetic energy in eV."""
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    energy = energy_ev * e
    return h / math.sqrt(2 * m0 * energy * (1 + energy / (2 * m0 * c**2))) * 1e10


def detector_params(
    frame_shape: tuple[int, int], dtype: str, compression: str, frame_time: float
) -> dict[str, Param]:
    """The detector module's parameters, defaults from the simulator's constructor."""
    ny, nx = frame_shape
    energy = 300_000.0
    return {
        "trigger_mode": Param("string", "ints", allowed_values=("exte", "exts", "inte", "ints")),
        "nimages": Param("uint", 1, min=1, max=2**31 - 1),
        "ntrigger": Param("uint", 1, min=1, max=2**31 - 1),
        "count_time": Param("float", frame_time, unit="s", min=0.0, max=3600.0),
        "frame_time": Param("float", frame_time, unit="s", min=0.0, max=3600.0),
        "compression": Param("string", compression, allowed_values=("bslz4", "lz4", "none")),
        "x_pixels_in_detector": Param("uint", nx, min=8, max=4096),
        "y_pixels_in_detector": Param("uint", ny, min=8, max=4096),
        "bit_depth_image": Param("uint", DTYPE_BIT_DEPTH[dtype], allowed_values=(8, 16, 32)),
        "bit_depth_readout": Param("uint", DTYPE_BIT_DEPTH[dtype], access_mode="r"),
        "roi_mode": Param("string", "disabled", allowed_values=("disabled", "merge2x2")),
        "incident_energy": Param("float", energy, unit="eV", min=1.0, max=1e7),
        "wavelength": Param(
            "float", electron_wavelength_angstrom(energy), access_mode="r", unit="A"
        ),
        "threshold_energy": Param("float", energy / 2, unit="eV", min=0.0, max=1e7),
        "beam_center_x": Param("float", nx / 2, unit="pixel"),
        "beam_center_y": Param("float", ny / 2, unit="pixel"),
        "detector_distance": Param("float", 0.1, unit="m", min=0.0),
        "description": Param("string", "Dectris ARINA Si (stemdaq simulator)"),
        "detector_number": Param("string", "E-01-0000-SIM"),
        "software_version": Param("string", "stemdaq-sim 0.1", access_mode="r"),
        "x_pixel_size": Param("float", 75e-6, access_mode="r", unit="m"),
        "y_pixel_size": Param("float", 75e-6, access_mode="r", unit="m"),
        "sensor_material": Param("string", "Si", access_mode="r"),
        "sensor_thickness": Param("float", 450e-6, access_mode="r", unit="m"),
        "countrate_correction_applied": Param("bool", False),
        "flatfield_correction_applied": Param("bool", False),
        "pixel_mask_applied": Param("bool", False),
        "mask_to_zero": Param("bool", False),
        # simulator only (not SIMPLON): a known beam deflection per scan step, pixels, for
        # tests of centre-of-mass maps; 0 and 0: the sample's own deflection
        "sim_deflection_x": Param("float", 0.0, unit="pixel", min=-16.0, max=16.0),
        "sim_deflection_y": Param("float", 0.0, unit="pixel", min=-16.0, max=16.0),
    }


def stream_params(simplon_version: str = SIMPLON_VERSION) -> dict[str, Param]:
    """The stream module's parameters; SIMPLON 1.6 has no ``format`` (it streams v1 only)."""
    params = {
        "mode": Param("string", "enabled", allowed_values=("enabled", "disabled")),
        "format": Param("string", "cbor", allowed_values=("cbor", "legacy", "json")),
        "header_detail": Param("string", "basic", allowed_values=("all", "basic", "none")),
        "header_appendix": Param("string", ""),
        "image_appendix": Param("string", ""),
    }
    if simplon_version in V1_ONLY_VERSIONS:
        del params["format"]
    return params


def stream_format_for(simplon_version: str, fmt: str | None) -> str:
    """The stream format a simulator of ``simplon_version`` starts with (``fmt`` if given).

    Raises
    ------
    ConfigError
        An unknown version, an unknown format, or stream v2 (``cbor``) asked of SIMPLON 1.6.
    """
    if simplon_version not in SIMPLON_VERSIONS:
        raise ConfigError(
            f"SIMPLON version {simplon_version!r} not one of {list(SIMPLON_VERSIONS)}"
        )
    v1_only = simplon_version in V1_ONLY_VERSIONS
    fmt = fmt or ("json" if v1_only else "cbor")
    if fmt not in ("cbor", "legacy", "json"):
        raise ConfigError(f"stream format {fmt!r} not one of ['cbor', 'json', 'legacy']")
    if v1_only and fmt == "cbor":
        raise ConfigError(
            f"SIMPLON {simplon_version} streams v1 only: use format json (or legacy), not cbor"
        )
    return fmt


class ConfigStore:
    """Values of one SIMPLON module; thread-safe."""

    def __init__(self, params: dict[str, Param]) -> None:
        self.params = params
        self._values = {name: p.default for name, p in params.items()}
        self._lock = threading.Lock()

    def keys(self) -> list[str]:
        """Parameter names."""
        return list(self.params)

    def __getitem__(self, name: str) -> Any:
        with self._lock:
            return self._values[name]

    def values(self) -> dict[str, Any]:
        """A copy of every value."""
        with self._lock:
            return dict(self._values)

    def describe(self, name: str) -> dict[str, Any]:
        """GET body of ``name``."""
        if name not in self.params:
            raise ParamNotFoundError(name)
        return self.params[name].describe(self[name])

    def set(self, name: str, value: Any) -> list[str]:
        """Validate and set; returns the names of every parameter whose value changed."""
        if name not in self.params:
            raise ParamNotFoundError(name)
        value = self.params[name].check(name, value)
        with self._lock:
            updates = {name: value}
            v = self._values
            if name == "incident_energy":
                updates["wavelength"] = electron_wavelength_angstrom(value)
                updates["threshold_energy"] = value / 2
            elif name == "frame_time" and v["count_time"] > value:
                updates["count_time"] = value
            elif name == "count_time" and v["frame_time"] < value:
                updates["frame_time"] = value
            elif name == "roi_mode" and value != v["roi_mode"]:
                factor = 0.5 if value == "merge2x2" else 2.0
                for key in ("x_pixels_in_detector", "y_pixels_in_detector"):
                    updates[key] = max(8, int(v[key] * factor))
                for key in ("beam_center_x", "beam_center_y"):
                    updates[key] = v[key] * factor
            elif name == "bit_depth_image":
                updates["bit_depth_readout"] = value
            changed = [k for k, val in updates.items() if v.get(k) != val or k == name]
            v.update(updates)
        return changed

    def force(self, name: str, value: Any) -> None:
        """Set without validation or access checks (the simulator's own changes)."""
        with self._lock:
            self._values[name] = value
