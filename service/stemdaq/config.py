"""The per-acquisition config: one typed model, merged and validated with one line per field.

:class:`AcquisitionConfig` is what one acquisition needs (stream, scan, file, compression,
calibration, metadata); the CLI ``acquire`` command builds one from flags, the service keeps a
current one that ``PUT /api/v1/config`` replaces and ``POST /api/v1/acquisitions`` may override.
The service's own settings, which hold the default :class:`AcquisitionConfig`, are
:class:`stemdaq.settings.Settings`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stemdaq.errors import ConfigError
from stemdaq.paths import check_template
from stemdaq.user_metadata import ELEMENTS as ELEMENTS  # re-exported: the settings tree
from stemdaq.user_metadata import MAX_METADATA_BYTES as MAX_METADATA_BYTES
from stemdaq.user_metadata import USER_KEYS as USER_KEYS
from stemdaq.user_metadata import MicroscopeMetadata as MicroscopeMetadata
from stemdaq.user_metadata import SampleMetadata as SampleMetadata
from stemdaq.user_metadata import UserMetadata as UserMetadata
from stemdaq.user_metadata import iso_datetime as iso_datetime

LengthUnit = Literal["m", "um", "nm", "angstrom"]
Compression = Literal["bslz4", "lz4", "zstd", "blosc", "gzip", "none"]

#: metres per unit, for the NX_LENGTH axes
LENGTH_UNITS: dict[str, float] = {"m": 1.0, "um": 1e-6, "nm": 1e-9, "angstrom": 1e-10}


#: bytes of RAM kept per scan position (written mask, frame id, three timestamps, summary image)
BOOKKEEPING_BYTES_PER_POSITION = 1 + 8 + 3 * 8 + 8 + 1


def parse_pair(value: Any) -> Any:
    """``"64x32"``, ``"64,32"``, ``[64, 32]`` or ``64`` (both) -> a 2-item list; other input as
    it is (the field's own validation then says what is wrong)."""
    if isinstance(value, str):
        parts = [p for p in value.lower().replace(",", "x").replace(" ", "").split("x") if p]
        if len(parts) in (1, 2):
            return parts * (3 - len(parts))
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value, value]
    return value


class _Model(BaseModel):
    # NaN and infinity are refused everywhere: they make NaN axes and JSON that does not round-trip
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Calibration(_Model):
    """Detector calibration used for the reciprocal-space axes (axis_j, axis_i).

    Either ``reciprocal_pixel_size`` (1/nm per pixel) is given, or ``pixel_size`` +
    ``camera_length`` + ``beam_energy`` (the wavelength follows relativistically). Values not
    given here are taken from the stream's start message where it has them. With neither, the
    detector axes are pixel indices (NX_UNITLESS).
    """

    pixel_size: float | None = Field(None, gt=0, description="Detector pixel pitch, m")
    camera_length: float | None = Field(None, gt=0, description="Camera length, m")
    beam_energy: float | None = Field(None, gt=0, description="Electron beam energy, eV")
    reciprocal_pixel_size: float | None = Field(
        None, gt=0, description="Reciprocal-space pixel size, 1/nm (overrides the geometry)"
    )
    beam_center: tuple[float, float] | None = Field(
        None,
        description="Beam centre (x, y) on the detector, pixels; "
        "default: from the stream, else the frame centre",
    )

    @field_validator("beam_center", mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:
        return parse_pair(v)


class AcquisitionConfig(_Model):
    """What one acquisition needs. Field names are a public contract (REST, YAML, env)."""

    detector_url: str | None = Field(
        None, description="SIMPLON base URL of the detector (active mode), e.g. http://dcu:80"
    )
    stream_endpoint: str | None = Field(
        None,
        description="ZeroMQ endpoint of the detector stream, e.g. tcp://dcu:31001. "
        "Default with detector_url: the detector's host, port 31001 (stream v2)",
    )
    scan_shape: tuple[int, int] = Field((64, 64), description="[n_m, n_k]: scan rows, scan columns")
    scan_step: tuple[float, float] = Field(
        (1.0, 1.0), description="Scan step [m, k] in scan_unit; finite and > 0"
    )
    scan_origin: tuple[float, float] = Field(
        (0.0, 0.0), description="Scan origin [m, k] in scan_unit"
    )
    scan_unit: LengthUnit = Field("nm", description="Unit of scan_step / scan_origin")
    serpentine: bool = Field(False, description="Odd scan rows run backwards (snake scan)")
    channel: str | None = Field(
        None, description="Record only this stream channel (e.g. threshold_1); default: all"
    )
    file_template: str = Field(
        "{date}/stemdaq_{id}.nxs",
        description="File name relative to the data directory; "
        "fields {id}, {date}, {time}, {series_id}",
    )
    compression: Compression = Field(
        "bslz4", description="Filter for frames that arrive uncompressed"
    )
    compression_level: int | None = Field(
        None, ge=0, le=22, description="Level for zstd/gzip/blosc"
    )
    calibration: Calibration = Field(default_factory=Calibration)
    metadata: UserMetadata = Field(default_factory=UserMetadata)
    frames_per_chunk: int = Field(
        8,
        ge=1,
        le=64,
        description="Frames of one scan row stored in one HDF5 chunk (1, K, ny, nx), where the "
        "frames allow it (detector bitshuffle-LZ4 frames whose size is a whole number of "
        "8 KiB blocks; at most 8 MiB per chunk); others keep one frame per chunk. 8: 40% less "
        "writer CPU than 1 at 192x192, a single-frame read 0.24 ms instead of 0.07 ms",
    )
    flush_frames: int = Field(
        10_000,
        ge=1,
        description="Flush (SWMR-visible) at least every N frames (and every flush_seconds): "
        "a flush writes the bookkeeping rows, ~1 ms; every 1,000 frames it took 7% of the "
        "data thread at 40k frames/s",
    )
    flush_seconds: float = Field(1.0, gt=0, description="Flush at least every T seconds")
    start_timeout: float = Field(60.0, gt=0, description="Seconds to wait for the series start")
    end_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds of stream silence after which a series without end is closed",
    )
    summary: bool = Field(True, description="Compute summed pattern and total-intensity image")
    summary_cpu_share: float = Field(
        0.1,
        gt=0,
        le=64,
        description="CPU the summary may use, in cores; above that it subsamples frames "
        "(recorded in the file) rather than slow down writing",
    )
    live_center: tuple[float, float] | None = Field(
        None,
        description="Live view: beam centre (x, y) on the detector, pixels; default: "
        "calibration.beam_center, else found in the summed pattern",
    )
    live_bf_radius: float | None = Field(
        None, gt=0, description="Live view: bright-field disk radius, pixels; default: found"
    )
    live_adf_inner: float | None = Field(
        None, ge=0, description="Live view: ADF annulus inner radius, pixels; default 1.5 x disk"
    )
    live_adf_outer: float | None = Field(
        None, gt=0, description="Live view: ADF annulus outer radius, pixels; default 3 x disk"
    )
    live_update_hz: float = Field(
        5.0, gt=0, le=60, description="Live view: WebSocket updates per second, at most"
    )
    live_completion_seconds: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Live view: after the scan, seconds spent at most completing the maps and "
        "the summed pattern from the file (the state is final after it), and never more than "
        "a tenth of the scan's own time (at least 0.5 s); 0: off",
    )
    is_simulation: bool = Field(
        False,
        description="Data come from a simulated detector (set automatically when the detector "
        "says it is stemdaq's simulator)",
    )
    max_scan_positions: int = Field(
        1 << 24,
        ge=1,
        description="Largest scan (positions) accepted; bookkeeping costs about "
        f"{BOOKKEEPING_BYTES_PER_POSITION} bytes of RAM per position",
    )
    min_free_mb: float = Field(
        256.0,
        ge=0,
        description="Free space (MB) kept on the file's file system: arming is refused when the "
        "estimated file size plus this does not fit, and a running acquisition stops (failed, "
        "file closed cleanly) when free space falls below it",
    )
    assumed_compression_ratio: float = Field(
        1.0,
        ge=1.0,
        le=1000.0,
        description="Compression ratio assumed when estimating the file size before arming "
        "(1: as large as the raw frames, the safe assumption)",
    )
    simplon_version: str | None = Field(
        None,
        max_length=32,
        description="SIMPLON API version to use when the detector does not say (e.g. 1.6.0); "
        "default: discovered from the detector",
    )
    arm_timeout: float = Field(
        10.0,
        gt=0,
        description="Active mode: seconds after arming within which the detector's start "
        "message must arrive on the stream endpoint; otherwise the detector is disarmed "
        "without being triggered",
    )

    @field_validator("scan_shape", "scan_step", "scan_origin", "live_center", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return parse_pair(v)

    @field_validator("scan_shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError("scan_shape entries must be >= 1")
        return v

    @field_validator("scan_step")
    @classmethod
    def _positive_step(cls, v: tuple[float, float]) -> tuple[float, float]:
        if min(v) <= 0:
            raise ValueError("scan_step entries must be > 0 (finite)")
        return v

    @model_validator(mode="after")
    def _live_annulus(self) -> AcquisitionConfig:
        inner, outer = self.live_adf_inner, self.live_adf_outer
        if inner is not None and outer is not None and inner >= outer:
            raise ValueError("live_adf_inner must be smaller than live_adf_outer")
        return self

    @model_validator(mode="after")
    def _bounded_scan(self) -> AcquisitionConfig:
        n = self.n_positions
        if n > self.max_scan_positions:
            ram = n * BOOKKEEPING_BYTES_PER_POSITION
            disk = n * 192 * 192 * 2
            raise ValueError(
                f"scan_shape {list(self.scan_shape)} has {n:,} positions, more than "
                f"max_scan_positions ({self.max_scan_positions:,}): it would need about "
                f"{ram / 2**30:.2f} GiB of RAM for bookkeeping and, at 192x192 uint16 frames, "
                f"{disk / 2**30:,.0f} GiB of disk uncompressed"
            )
        return self

    @property
    def n_positions(self) -> int:
        """Number of scan positions."""
        return self.scan_shape[0] * self.scan_shape[1]

    def resolved_stream_endpoint(self) -> str:
        """The stream endpoint, defaulting to the detector host on port 31001."""
        if self.stream_endpoint:
            return self.stream_endpoint
        if self.detector_url:
            from urllib.parse import urlparse

            try:
                host = urlparse(self.detector_url).hostname or "127.0.0.1"
            except ValueError as exc:
                raise ConfigError(f"invalid detector_url {self.detector_url!r}: {exc}") from None
            return f"tcp://[{host}]:31001" if ":" in host else f"tcp://{host}:31001"
        raise ConfigError("neither stream_endpoint nor detector_url is set")


def merge_config(base: AcquisitionConfig, changes: dict[str, Any]) -> AcquisitionConfig:
    """``base`` with ``changes`` merged in (nested dicts merge key by key), validated again.

    Raises
    ------
    ConfigError
        With one readable line per invalid field.
    """
    merged = deep_merge(base.model_dump(), changes)
    try:
        config = AcquisitionConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc).replace("invalid settings", "invalid config")
        ) from None
    check_template(config.file_template)
    return config


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, nested dicts key by key."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(exc: ValidationError) -> str:
    """One line per invalid field: ``scan_shape.0: Input should be ... (got -1)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = ""
        if "input" in err and not isinstance(err["input"], dict):
            text = repr(err["input"])
            got = f" (got {text if len(text) <= 80 else text[:60] + f'... ({len(text)} chars)'})"
        lines.append(f"{loc}: {err['msg']}{got}")
    return "invalid settings: " + "; ".join(lines)
