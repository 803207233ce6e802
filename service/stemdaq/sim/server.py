"""Run an ASGI app with uvicorn in a background thread, on a socket bound before it starts.

Binding the socket ourselves makes port 0 work (the chosen port is known at once) and lets the
caller wait until the server accepts connections.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn

from stemdaq.errors import DetectorError


class BindError(DetectorError):
    """A port of the simulator cannot be bound (in use, not allowed, no such address)."""


def bind_error(what: str, port: int, exc: OSError) -> BindError:
    """``cannot bind REST port 8080: address already in use`` from the OSError of the bind."""
    reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
    return BindError(f"cannot bind {what} port {port}: {reason}")


class RestServer:
    """uvicorn in a daemon thread; ``port`` is the bound port."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise bind_error("REST", port, exc) from exc
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"stemdaq-sim-rest-{self.port}", daemon=True
        )
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # noqa: BLE001 - stored and re-raised by maybe_raise
            self.error = exc

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()

    def wait_started(self, timeout: float) -> None:
        """Block until uvicorn is accepting connections."""
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self.error is not None or not self._thread.is_alive():
                raise DetectorError(f"SIMPLON server failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                raise DetectorError(f"SIMPLON server not listening after {timeout} s")
            time.sleep(0.005)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()
