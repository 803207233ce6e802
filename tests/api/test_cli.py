"""``stemdaq status/start/stop/watch`` against a live server; ``serve`` start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from stemdaq.cli import app
from stemdaq_client import Client
from typer.testing import CliRunner

from .conftest import ServerThread

runner = CliRunner()


def test_start_watch_status_stop(server: ServerThread, client: Client) -> None:
    result = runner.invoke(
        app, ["start", "--url", server.url, "--scan", "6x7", "--set", "serpentine=true", "--watch"]
    )
    assert result.exit_code == 0, result.output
    acq_id, file_path = result.stdout.split()[:2]
    acq = client.get(acq_id)
    assert (
        acq.state.value == "completed" and acq.frames_expected == 42 and acq.file_path == file_path
    )
    assert acq.config["serpentine"] is True
    result = runner.invoke(app, ["status", "--url", server.url, "--json"])
    assert result.exit_code == 0 and acq_id in result.stdout

    result = runner.invoke(app, ["start", "--url", server.url, "--stream", "fake://hold"])
    assert result.exit_code == 0, result.output
    held = result.stdout.split()[0]
    result = runner.invoke(app, ["stop", "--url", server.url, "--abort"])
    assert result.exit_code == 0 and held in result.stdout
    result = runner.invoke(app, ["watch", held, "--url", server.url])
    assert result.exit_code == 1  # aborted: not completed
    assert client.get(held).state.value == "aborted"


def test_client_errors_exit_1(server: ServerThread) -> None:
    result = runner.invoke(app, ["start", "--url", server.url, "--scan", "0x4"])
    assert result.exit_code == 1 and "scan_shape" in result.stderr
    result = runner.invoke(app, ["status", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "cannot reach" in result.stderr


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"STEMDAQ_QUEUE_SIZE": "1"}, [], "queue_size"),
        ({}, ["--config", "/nonexistent.yaml"], "config file not found"),
    ],
)
def test_serve_rejects_bad_settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    args: list[str],
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
