"""The simulator's two sockets: the SIMPLON REST server and the ZeroMQ PUSH sender.

:class:`SimHost` binds them (port 0 picks a free port), exposes their addresses, stores the
errors of their background threads and re-raises them (``maybe_raise``), as LiberTEM-live's
``DectrisSim`` does. :class:`~stemdaq.sim.detector.SimulatedDetector` builds on it.
"""

from __future__ import annotations

import threading
from typing import Any

from stemdaq.errors import DetectorError
from stemdaq.sim.server import BindError, RestServer
from stemdaq.sim.stream import StreamSender


class SimHost:
    """Bound sockets, their addresses and their background errors.

    Parameters
    ----------
    rest_host, rest_port
        SIMPLON HTTP server address; port 0 picks a free port (see :attr:`rest_port`).
    stream_port, stream_host
        ZeroMQ PUSH port and address (default: ``rest_host``); 0 picks a free port.
    """

    def __init__(
        self, rest_host: str, rest_port: int, stream_port: int, stream_host: str | None
    ) -> None:
        self.rest_host = rest_host
        self.stream_host = stream_host or rest_host
        self._rest_port_requested = rest_port
        self._stream_port_requested = stream_port
        self._lock = threading.RLock()
        self._errors: list[BaseException] = []
        self._sender: StreamSender | None = None
        self._server: RestServer | None = None

    def _open(self, app: Any, hwm: int) -> None:
        """Bind the stream socket (send queue ``hwm`` messages), start serving ``app``.

        Raises
        ------
        BindError
            A port is taken (or not allowed); nothing is left open.
        """
        self._sender = StreamSender(
            self.stream_host, self._stream_port_requested, hwm=hwm, on_error=self._record_error
        )
        try:
            self._server = RestServer(app, self.rest_host, self._rest_port_requested)
        except BindError:
            self._sender.close()
            self._sender = None
            raise
        self._server.start()

    def _close(self) -> None:
        """Shut the REST server down and close the stream socket."""
        if self._server is not None:
            self._server.stop()
        if self._sender is not None:
            self._sender.close()
        if self._server is not None and self._server.error is not None:
            self._record_error(self._server.error)

    def wait_for_listen(self, timeout: float = 10.0) -> None:
        """Block until the REST server accepts connections; raise on timeout or startup error."""
        if self._server is None:
            raise DetectorError("simulator not started")
        self._server.wait_started(timeout)
        self.maybe_raise()

    def maybe_raise(self) -> None:
        """Re-raise the first error of a background thread (stream sender, REST server)."""
        if self._server is not None and self._server.error is not None and not self._errors:
            self._record_error(self._server.error)
        if self._errors:
            raise DetectorError(
                f"simulated detector failed: {self._errors[0]!r}"
            ) from self._errors[0]

    @property
    def errors(self) -> list[BaseException]:
        """Errors raised in the background threads so far."""
        with self._lock:
            return list(self._errors)

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _require_sender(self) -> StreamSender:
        if self._sender is None:
            raise DetectorError("simulator not started")
        return self._sender

    # -- addresses ------------------------------------------------------------------------------

    @property
    def rest_port(self) -> int:
        """Bound SIMPLON port."""
        if self._server is None:
            raise DetectorError("simulator not started")
        return self._server.port

    @property
    def port(self) -> int:
        """Alias of :attr:`rest_port` (the port a client is given)."""
        return self.rest_port

    @property
    def stream_port(self) -> int:
        """Bound ZeroMQ PUSH port."""
        return self._require_sender().port

    @property
    def rest_url(self) -> str:
        """``http://host:port`` of the SIMPLON API."""
        return f"http://{self.rest_host}:{self.rest_port}"

    @property
    def stream_endpoint(self) -> str:
        """``tcp://host:port`` to connect a PULL socket to."""
        return f"tcp://{self.stream_host}:{self.stream_port}"
