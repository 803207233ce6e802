"""Engine calls that may block, run off the event loop (the control plane never waits on them).

:class:`Closers` runs each acquisition's ``close()`` (which joins its threads) in a daemon
thread of its own, at most one per acquisition, so a close that takes long holds neither a
worker of the loop's executor nor interpreter exit. :func:`call_in_thread` runs a quick but
engine-owned call (stop, abort) in the loop's executor and logs its failure.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Closers:
    """At most one closing thread per acquisition id; awaitable with a timeout."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[None]] = {}

    async def close(self, acq_id: str, close: Callable[[], object], timeout: float | None) -> bool:
        """Run ``close()`` in its own daemon thread; True if it returned within ``timeout`` s
        (None: wait until it does). A close that takes longer goes on by itself."""
        fut = self._futures.get(acq_id)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._futures[acq_id] = fut
            fut.add_done_callback(lambda _f: self._futures.pop(acq_id, None))

            def run() -> None:
                error: BaseException | None = None
                try:
                    close()
                except BaseException as exc:  # noqa: BLE001 - reported on the loop
                    error = exc
                try:
                    loop.call_soon_threadsafe(_settle, fut, error, acq_id)
                except RuntimeError:  # the loop is gone: nobody waits any more
                    if error is not None:
                        logger.error("acquisition %s: close failed: %s", acq_id, error)

            threading.Thread(target=run, name=f"stemdaq-close-{acq_id}", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        return True


def _settle(fut: asyncio.Future[None], error: BaseException | None, acq_id: str) -> None:
    if error is not None:
        logger.error("acquisition %s: close failed: %s", acq_id, error)
    if not fut.done():
        fut.set_result(None)


def call_in_thread(fn: Callable[[], object], what: str) -> None:
    """Run a (non-blocking, but engine-owned) call in a worker thread, never on the loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on the loop: calling it here blocks nobody
        fn()
        return

    def report(f: asyncio.Future[object]) -> None:
        if not f.cancelled() and f.exception() is not None:
            logger.error("%s failed: %s", what, f.exception())

    loop.run_in_executor(None, fn).add_done_callback(report)
