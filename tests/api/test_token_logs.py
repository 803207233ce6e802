"""The API token never reaches the logs, though the live view's WebSocket takes it as
``?token=`` (browsers cannot set its headers) and uvicorn logs paths with their query."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from polling import free_port, wait_for
from stemdaq.api.redact import RedactToken, redact
from websockets.sync.client import connect

SECRET = "s3cret-Token_value"


def test_redact_replaces_every_token_value() -> None:
    assert redact(f"/api/v1/live/ws?token={SECRET}") == "/api/v1/live/ws?token=***"
    assert redact(f"/x?a=1&token={SECRET}&b=2") == "/x?a=1&token=***&b=2"
    assert redact("/x?mytoken=1") == "/x?mytoken=1"  # another parameter's name: left alone
    args = (("127.0.0.1", 5), f"/api/v1/live/ws?token={SECRET}")
    message = '%s - "WebSocket %s" [accepted]'  # uvicorn's
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, message, args, None)
    assert RedactToken().filter(record)
    assert SECRET not in record.getMessage()
    assert "token=***" in record.getMessage()


@pytest.mark.timeout(120)
def test_a_real_service_logs_no_token(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "STEMDAQ_API__TOKEN": SECRET,
        "STEMDAQ_API__PROTECT_READS": "true",
        "STEMDAQ_LOG_LEVEL": "INFO",
    }
    cmd = [sys.executable, "-m", "stemdaq.cli", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(tmp_path / "data")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), 60, "stemdaq serve to answer")
        with connect(f"ws://127.0.0.1:{port}/api/v1/live/ws?token={SECRET}", open_timeout=10):
            pass  # accepted: the token was right
        r = httpx.get(f"{url}/api/v1/status", params={"token": SECRET}, timeout=10)
        assert r.status_code == 401  # a query token is no bearer token for HTTP
        wait_for(lambda: "api/v1/status" in log.read_text(), 10, "the access log line")
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert "WebSocket /api/v1/live/ws?token=***" in text
    assert "/api/v1/status?token=***" in text
    assert SECRET not in text


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
