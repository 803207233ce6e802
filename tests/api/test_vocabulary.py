"""One name per setting: walk the settings model and set each field through every door
(CLI flag of ``acquire`` and ``start``, REST ``PUT /api/v1/config``, env ``STEMDAQ_...``, YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
import yaml
from stemdaq.cli import app
from stemdaq.commands.options import FLAGS, NOT_FLAGS, to_settings
from stemdaq.config import AcquisitionConfig, Calibration
from stemdaq.settings import load_settings

#: a valid value other than the default for every setting: (CLI text, expected config value)
SAMPLES: dict[str, tuple[str, Any]] = {
    "detector_url": ("http://dcu:8080", "http://dcu:8080"),
    "stream_endpoint": ("tcp://dcu:31002", "tcp://dcu:31002"),
    "scan_shape": ("3x5", (3, 5)),
    "scan_step": ("2", (2.0, 2.0)),
    "scan_origin": ("1,-2", (1.0, -2.0)),
    "scan_unit": ("um", "um"),
    "serpentine": ("", True),
    "channel": ("threshold_2", "threshold_2"),
    "file_template": ("{id}.nxs", "{id}.nxs"),
    "compression": ("zstd", "zstd"),
    "compression_level": ("5", 5),
    "frames_per_chunk": ("4", 4),
    "flush_frames": ("10", 10),
    "flush_seconds": ("0.5", 0.5),
    "start_timeout": ("7", 7.0),
    "end_timeout": ("3", 3.0),
    "summary": ("", False),
    "summary_cpu_share": ("0.25", 0.25),
    "is_simulation": ("", True),
    "max_scan_positions": ("100000", 100000),
    "min_free_mb": ("12.5", 12.5),
    "assumed_compression_ratio": ("4", 4.0),
    "arm_timeout": ("3", 3.0),
    "simplon_version": ("1.6.0", "1.6.0"),
    "live_center": ("90x80", (90.0, 80.0)),
    "live_bf_radius": ("12.5", 12.5),
    "live_adf_inner": ("20", 20.0),
    "live_adf_outer": ("40", 40.0),
    "live_update_hz": ("2", 2.0),
    "live_completion_seconds": ("0", 0.0),
    "calibration.pixel_size": ("7.5e-05", 7.5e-05),
    "calibration.camera_length": ("0.12", 0.12),
    "calibration.beam_energy": ("200000", 200000.0),
    "calibration.reciprocal_pixel_size": ("0.02", 0.02),
    "calibration.beam_center": ("96x90", (96.0, 90.0)),
}
FALSE_BY_FLAG = {"summary"}  # booleans whose sample is the --no- form


def _get(config: AcquisitionConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    return out


def test_every_setting_has_a_flag_and_a_sample() -> None:
    """A new field of the model fails here until it has a flag (or is set otherwise)."""
    keys = {f.key for f in FLAGS}
    model = {name for name in AcquisitionConfig.model_fields if name not in NOT_FLAGS}
    model |= {f"calibration.{name}" for name in Calibration.model_fields}
    assert keys == model
    assert set(SAMPLES) >= keys, f"no sample for {sorted(keys - set(SAMPLES))}"
    for key in keys:  # every sample differs from the default, so each check below can fail
        assert _get(AcquisitionConfig(), key) != SAMPLES[key][1], key


@pytest.mark.parametrize("command", ["acquire", "start"])
@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f.key)
def test_cli_flag_sets_the_setting(command: str, flag: Any) -> None:
    if command == "acquire" and flag.key == "file_template":
        pytest.skip("acquire names its file with --out")
    text, expected = SAMPLES[flag.key]
    cli = typer.main.get_command(app)
    cmd = cli.commands[command]  # type: ignore[attr-defined]
    name = flag.flag
    if text == "":
        name = f"--no-{flag.flag[2:]}" if flag.key in FALSE_BY_FLAG else flag.flag
    args = [name] if text == "" else [name, text]
    if command == "acquire":
        args += ["--out", "x.nxs"]
    ctx = cmd.make_context(command, args)
    given = {f.path: ctx.params.get(f.name) for f in FLAGS if f.name in ctx.params}
    settings = to_settings(given)
    config = AcquisitionConfig.model_validate(settings)
    assert _get(config, flag.key) == expected


def test_env_and_yaml_set_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, (_, expected) in SAMPLES.items():
        if key not in {f.key for f in FLAGS}:
            continue
        env = "STEMDAQ_ACQUISITION__" + key.upper().replace(".", "__")
        raw = ",".join(map(str, expected)) if isinstance(expected, tuple) else str(expected)
        if isinstance(expected, tuple):
            raw = "[" + raw + "]"
        monkeypatch.setenv(env, raw.lower() if isinstance(expected, bool) else raw)
        assert _get(load_settings().acquisition, key) == expected, env
        monkeypatch.delenv(env)
        yml = tmp_path / "settings.yaml"
        yml.write_text(yaml.safe_dump({"acquisition": _nested(key, expected)}))
        assert _get(load_settings(yml).acquisition, key) == expected, f"YAML {key}"


def test_rest_config_takes_every_setting(server: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for key, (_, expected) in SAMPLES.items():
            if key not in {f.key for f in FLAGS}:
                continue
            r = http.put("/api/v1/config", json=_nested(key, expected))
            assert r.status_code == 200, (key, r.text)
            got = r.json()
            for part in key.split("."):
                got = got[part]
            assert (tuple(got) if isinstance(got, list) else got) == expected, key
