"""ZeroMQ PULL source: the detector (DCU) binds PUSH, we connect and take multipart messages.

A PUSH socket deals messages round-robin to every connected PULL client, so stemdaq must be the
only consumer of a DCU stream (DECTRIS stream v2 README).
"""

from __future__ import annotations

import zmq


class ZmqSource:
    """Receive zero-copy multipart messages from a PUSH endpoint.

    Parameters
    ----------
    endpoint
        e.g. ``tcp://dcu:31001`` (stream v2) or ``tcp://dcu:9999`` (stream v1).
    rcvhwm
        Receive high-water mark in messages (EigerFan uses 100000): when the consumer lags,
        messages wait here and then in the sender's queue, not on the floor.
    context
        ZeroMQ context to use; default: the process-wide instance.
    """

    def __init__(
        self, endpoint: str, rcvhwm: int = 100_000, context: zmq.Context | None = None
    ) -> None:
        self.endpoint = endpoint
        self._socket: zmq.Socket = (context or zmq.Context.instance()).socket(zmq.PULL)
        try:
            self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
            self._socket.setsockopt(zmq.LINGER, 0)
            if endpoint.startswith("tcp://["):
                self._socket.setsockopt(zmq.IPV6, 1)
            self._socket.connect(endpoint)
        except zmq.ZMQError:
            self._socket.close(linger=0)
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)

    @property
    def socket(self) -> zmq.Socket:
        """The PULL socket, for a caller that drains it with ``NOBLOCK`` receives."""
        return self._socket

    def recv_ready(self, timeout_ms: int | None = None) -> bool:
        """Wait until a message can be received (True) or the timeout passed (False)."""
        return bool(self._poller.poll(timeout_ms))

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return bool(self._socket.closed)

    def recv(self, timeout_ms: int | None = None) -> list[zmq.Frame] | None:
        """One whole multipart message (zero-copy frames), or None if none came within the timeout.

        ``timeout_ms=None`` waits forever; 0 only checks.
        """
        if not self._poller.poll(timeout_ms):
            return None
        return self._socket.recv_multipart(copy=False)

    def close(self) -> None:
        """Close the socket (pending messages are discarded)."""
        if not self._socket.closed:
            self._poller.unregister(self._socket)
            self._socket.close(linger=0)

    def __enter__(self) -> ZmqSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
