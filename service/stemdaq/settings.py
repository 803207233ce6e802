"""The service's settings: env ``STEMDAQ_*`` (nested with ``__``), an optional YAML file, CLI flags.

One name per setting, whichever way it is given: ``data_dir`` is ``STEMDAQ_DATA_DIR``,
``data_dir:`` in the YAML file and ``stemdaq serve --data-dir``; ``api.port`` is
``STEMDAQ_API__PORT``. Precedence: CLI flags > env > YAML file.
:class:`Settings` holds the default :class:`~stemdaq.config.AcquisitionConfig` as
``acquisition``; :func:`load_settings` builds it with one readable error for every invalid
setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

from stemdaq.config import AcquisitionConfig, deep_merge, format_validation_error
from stemdaq.errors import ConfigError


class ApiSettings(BaseModel):
    """HTTP server settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

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
