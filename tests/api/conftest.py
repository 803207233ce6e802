"""Fixtures of the API tests: a real uvicorn server on a random port, driven through the client."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from stemdaq.api.app import create_app
from stemdaq.settings import Settings
from stemdaq_client import Client

from .fakes import FakeAcquisition

TOKEN = "s3cret-token"


class ServerThread:
    """uvicorn in a thread, bound to port 0; ``url`` once it listens."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            timeout_graceful_shutdown=2,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.app = app
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.state.manager.end_streams()  # as `stemdaq serve` does on Ctrl-C
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.thread.is_alive():  # pragma: no cover - a hang is a bug
            raise RuntimeError("uvicorn did not stop")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def make_settings(data_dir: Path) -> Callable[..., Settings]:
    def make(**kwargs: Any) -> Settings:
        acquisition = {
            "stream_endpoint": "fake://",
            "scan_shape": (16, 16),
            **kwargs.pop("acquisition", {}),
        }
        return Settings(data_dir=data_dir, acquisition=acquisition, **kwargs)

    return make


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerThread]]:
    """``start_server(settings, factory=FakeAcquisition)`` -> a running server until teardown."""
    with contextlib.ExitStack() as stack:

        def start(settings: Settings, factory: Any = FakeAcquisition) -> ServerThread:
            return stack.enter_context(ServerThread(create_app(settings, factory=factory)))

        yield start


@pytest.fixture
def server(
    start_server: Callable[..., ServerThread], make_settings: Callable[..., Settings]
) -> ServerThread:
    """A server with the fake engine and no token."""
    return start_server(make_settings())


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.url, token="") as c:
        yield c
