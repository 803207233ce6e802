"""One typed settings tree.

:class:`AcquisitionConfig` is what one acquisition needs (stream, scan, file, compression,
calibration, metadata); the CLI ``acquire`` command builds one from flags, the service keeps a
current one that ``PUT /api/v1/config`` replaces and ``POST /api/v1/acquisitions`` may override.
:class:`Settings` is the service's own settings (env ``STEMDAQ_...``, nested with ``__``, an
optional YAML file, CLI flags), holding the default :class:`AcquisitionConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

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


class ApiSettings(_Model):
    """HTTP server settings."""

    host: str = Field("127.0.0.1", description="Bind address")
    port: int = Field(8000, ge=0, le=65535, description="Bind port (0: any free port)")
    token: SecretStr | None = Field(None, description="Bearer token for control endpoints")
    protect_reads: bool = Field(False, description="Require the token for read endpoints too")


class Settings(BaseSettings):
    """The service's settings: env ``STEMDAQ_*`` (nested with ``__``), YAML, CLI flags."""

    model_config = SettingsConfigDict(
        env_prefix="STEMDAQ_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    data_dir: Path = Field(Path("data"), description="Root of all acquisition files")
    state_dir: Path | None = Field(
        None, description="Where history is kept; default data_dir/.stemdaq"
    )
    api: ApiSettings = Field(default_factory=ApiSettings)
    api_token: SecretStr | None = Field(None, description="Alias of api.token (STEMDAQ_API_TOKEN)")
    acquisition: AcquisitionConfig = Field(default_factory=AcquisitionConfig)
    queue_size: int = Field(
        1000,
        ge=16,
        description="Stream messages buffered on our side while writing (ZeroMQ RCVHWM); beyond "
        "that the detector's own send queue holds them (back-pressure, not loss)",
    )
    compress_workers: int = Field(2, ge=1, description="Threads compressing raw frames")
    # -- scale-out: N writer ranks, one master file (docs/ARCHITECTURE.md, "Scale-out") --------
    ranks: int = Field(
        1,
        ge=1,
        le=64,
        description="Writer ranks (data processes) per acquisition; 1: one process, one file",
    )
    rank_index: int | None = Field(
        None,
        ge=0,
        le=63,
        description="`stemdaq rank`: this rank's index; default the trailing ordinal of the "
        "host name (a StatefulSet pod `name-N`)",
    )
    rank_block_rows: int = Field(
        1, ge=1, description="Scan rows per block: rank = (image_id // (n_k * this)) % ranks"
    )
    rank_port: int = Field(
        8100,
        ge=1,
        le=65535,
        description="Control port (HTTP) of a rank; local ranks of `serve` use rank_port + index",
    )
    rank_urls: list[str] = Field(
        default_factory=list,
        description="Control URLs of ranks started elsewhere (Kubernetes); empty: `serve` "
        "starts `ranks` local rank processes",
    )
    fan_url: str | None = Field(
        None,
        description="Control URL of a fan started elsewhere; none: `serve` starts a local one",
    )
    fan_host: str = Field(
        "127.0.0.1", description="Host the ranks connect to for their frames (the fan's)"
    )
    fan_port: int = Field(
        31100,
        ge=1,
        le=65535,
        description="First data port of the fan: rank i receives its frames on fan_port + i",
    )
    fan_control_port: int = Field(8090, ge=1, le=65535, description="Control port of the fan")
    fan_send_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds the fan waits for a rank to take a frame before it counts the "
        "rank as lost and drops its frames (counted)",
    )
    log_level: str = Field("INFO", description="Python logging level")
    site_metadata: Path | None = Field(
        None,
        description="YAML/JSON file of what is fixed at this site (microscope vendor, model, "
        "serial number, emitter type, location, beam energy), in stemdaq's metadata format or "
        "the pynxtools-em ELN convention: the base under every acquisition's metadata",
    )

    @field_validator("site_metadata")
    @classmethod
    def _site_file(cls, v: Path | None) -> Path | None:
        if v is not None:
            from stemdaq.eln import load_metadata_file

            try:
                load_metadata_file(v)
            except ConfigError as exc:
                raise PydanticCustomError("site_metadata", "{error}", {"error": str(exc)}) from None
        return v

    @model_validator(mode="after")
    def _site_under_acquisition(self) -> Settings:
        """The site file's values under the acquisition settings given (env, YAML, flags)."""
        if self.site_metadata is not None:
            from stemdaq.eln import load_metadata_file

            given = self.acquisition.model_dump(exclude_unset=True)
            merged = deep_merge(load_metadata_file(self.site_metadata), given)
            self.acquisition = AcquisitionConfig.model_validate(merged)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: CLI/init > env > YAML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = settings_cls.model_config.get("yaml_file")
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @property
    def token(self) -> str | None:
        """The bearer token for control endpoints, if any."""
        secret = self.api.token or self.api_token
        return secret.get_secret_value() if secret else None

    @property
    def resolved_state_dir(self) -> Path:
        """Directory of the persistent history."""
        return self.state_dir or self.data_dir / ".stemdaq"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from env, an optional YAML file and CLI overrides.

    Raises
    ------
    ConfigError
        With one readable message listing every invalid setting.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(f"config file not found: {config_file}")

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    try:
        settings = _FileSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    return Settings.model_validate(settings.model_dump())


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
