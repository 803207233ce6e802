"""The simulator's data plane: one thread owns the ZeroMQ PUSH socket and sends, in order.

Jobs (callables) are queued by the control side (REST handlers, :class:`SimulatedDetector`
methods) and run one after another in the sender thread, so the start, the frames and the end of
a series always leave in order and the socket is only touched by one thread. Frames are generated
and compressed in this thread just before they are sent.

Sends never drop silently: the socket has a large high-water mark and a send that would block is
retried until it goes through, or until the series is cancelled (abort/disarm) or the simulator
stops; only then is the message counted in :attr:`StreamSender.dropped`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import zmq

from stemdaq.sim.server import bind_error

logger = logging.getLogger(__name__)

Job = Callable[["StreamSender"], None]
_STOP = object()


class StreamSender:
    """Bind a PUSH socket and run queued jobs in a thread.

    Parameters
    ----------
    host, port
        Where to bind; ``port=0`` binds a random free port (see :attr:`port`).
    hwm
        Send high-water mark, in messages.
    on_error
        Called with an exception raised by a job (the thread goes on with the next job).
    """

    def __init__(
        self,
        host: str,
        port: int,
        hwm: int = 100_000,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._ctx = zmq.Context()
        self._socket = self._ctx.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 2000)
        try:
            if port == 0:
                self.port = self._socket.bind_to_random_port(f"tcp://{host}")
            else:
                self._socket.bind(f"tcp://{host}:{port}")
                self.port = port
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            self._ctx.term()
            reason = zmq.strerror(exc.errno) if exc.errno else str(exc)  # without the address
            raise bind_error("stream", port, OSError(exc.errno, reason)) from exc
        self.endpoint = f"tcp://{host}:{self.port}"
        self.dropped = 0
        self.messages_sent = 0
        self._jobs: queue.Queue[object] = queue.Queue()
        self._stopping = threading.Event()
        self._on_error = on_error
        self._thread = threading.Thread(
            target=self._run, name=f"stemdaq-sim-push-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while jobs are queued or running."""
        return self._jobs.unfinished_tasks > 0

    def submit(self, job: Job) -> None:
        """Queue ``job`` to run in the sender thread after the jobs already queued."""
        self._jobs.put(job)

    def send(self, parts: list[bytes], cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Send one message (sender thread only); False if cancelled/stopped before it went out."""
        flags = zmq.NOBLOCK
        while True:
            try:
                self._socket.send_multipart(parts, flags=flags, copy=len(parts[-1]) < 65536)
                self.messages_sent += 1
                return True
            except zmq.Again:
                if cancelled() or self._stopping.is_set():
                    self.dropped += 1
                    return False
                self._socket.poll(50, zmq.POLLOUT)

    def sleep(self, seconds: float) -> bool:
        """Sleep (pacing); returns early with False when the simulator stops."""
        return not self._stopping.wait(seconds)

    @property
    def stopping(self) -> bool:
        """True once :meth:`close` was called."""
        return self._stopping.is_set()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is _STOP:
                    return
                if not self._stopping.is_set():
                    job(self)  # type: ignore[operator]
            except Exception as exc:  # keep serving; the control side re-raises it
                logger.exception("simulator stream job failed")
                if self._on_error is not None:
                    self._on_error(exc)
            finally:
                self._jobs.task_done()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the running job (queued jobs are skipped), close the socket."""
        self._stopping.set()
        self._jobs.put(_STOP)
        self._thread.join(timeout)
        self._socket.close(linger=0 if self._thread.is_alive() else 1000)
        self._ctx.term()
