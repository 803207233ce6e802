"""The one running acquisition: the slot it holds, waiting for it to end, filing it.

:class:`AcquisitionSlot` keeps the acquisition the manager armed (at most one). A watcher task
waits (off the loop) for the engine to end, then files it: the engine's ``close()`` in its own
thread (:class:`stemdaq.offloop.Closers`), the final record in the history, the lifetime totals
and the last state event (:class:`stemdaq.records.Records`); the slot is freed whatever happens.
A start that failed or was cancelled is filed FAILED by a clean-up task in the watcher's place.
At shutdown a running acquisition is aborted and filed within a bound.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Protocol

from stemdaq.eventbus import Event
from stemdaq.models import AcquisitionInfo, AcquisitionState
from stemdaq.offloop import Closers
from stemdaq.records import Records

logger = logging.getLogger(__name__)

_WATCH_PERIOD = 0.1  # seconds between checks for the end of the running acquisition
#: seconds an arm waits for a finished acquisition to be filed (history, slot) before 409
FILING_WAIT = 10.0
_FAIL_WAIT = 2.0  # seconds a failed start waits for the engine's threads before closing
_CLOSE_WAIT = 5.0  # seconds to wait for an engine's close() on the failure/shutdown paths


class AcquisitionLike(Protocol):
    """What the manager needs from one acquisition (``stemdaq.acquisition.Acquisition``)."""

    @property
    def state(self) -> AcquisitionState: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def abort(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def close(self) -> bool | None: ...  # the engine returns whether its threads ended
    def info(self) -> AcquisitionInfo: ...
    def latency_histogram(self) -> tuple[list[float], list[int], float]: ...


class AcquisitionSlot:
    """At most one acquisition, from the moment it is built until it is filed.

    Lives on the event loop; what blocks (``wait``, ``close``, history writes) runs in threads.
    """

    def __init__(self, records: Records) -> None:
        self._records = records
        #: the acquisition being recorded (or just finished and not yet filed), and its id
        self.current: AcquisitionLike | None = None
        self.current_id: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closers = Closers()

    def take(self, acq: AcquisitionLike, acq_id: str) -> None:
        """``acq`` holds the slot from now on; :meth:`watch` or :meth:`fail_start` frees it."""
        self.current, self.current_id = acq, acq_id

    def watch(self, acq: AcquisitionLike, acq_id: str) -> None:
        """Wait for the started ``acq`` to end, then file it (a task)."""
        self._watcher = asyncio.create_task(self._watch(acq), name=f"stemdaq-watch-{acq_id}")

    async def close(self, timeout: float) -> None:
        """Abort a running acquisition, wait for its file to close, file it (see
        :meth:`stemdaq.manager.AcquisitionManager.close` for the bounds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        acq = self.current
        if acq is not None and not acq.state.is_final:
            logger.warning("shutting down: aborting acquisition %s", self.current_id)
            await asyncio.to_thread(acq.abort)
            await asyncio.to_thread(acq.wait, timeout)
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            remaining = max(2.0, deadline - loop.time())
            done, _ = await asyncio.wait({watcher}, timeout=remaining)
            if not done:
                logger.error(
                    "shutting down: acquisition %s not filed within %.0f s; giving up on it",
                    self.current_id,
                    timeout,
                )
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        if self.current is not None:  # the watcher did not get there (timeout)
            await self._finalize(self.current, close_timeout=_CLOSE_WAIT, shutting_down=True)

    async def await_filing(self) -> None:
        """If the current acquisition already reported its final state, wait (bounded) until
        it is filed and its slot free: a client that saw "completed" may arm the next one at
        once, and must not get 409 for the moment filing takes."""
        acq, watcher = self.current, self._watcher
        if acq is None or watcher is None or not acq.state.is_final:
            return
        try:
            await asyncio.wait_for(asyncio.shield(watcher), timeout=FILING_WAIT)
        except TimeoutError:
            logger.warning(
                "acquisition %s: still being filed after %g s", self.current_id, FILING_WAIT
            )
        except Exception:  # the watcher's own error is logged where it happens
            logger.debug("watcher ended with an error", exc_info=True)

    def fail_start(
        self,
        acq: AcquisitionLike,
        acq_id: str,
        error: str,
        start: asyncio.Future[None] | None,
    ) -> asyncio.Task[None]:
        """Run :meth:`_fail_start` as the slot's watcher task (survives cancelling the arm)."""
        # from now on the engine's own snapshots (e.g. a late "aborted") are ignored
        self._records.forget(acq_id)
        task = asyncio.create_task(
            self._fail_start(acq, acq_id, error, start), name=f"stemdaq-fail-{acq_id}"
        )
        self._watcher = task
        return task

    async def _fail_start(
        self,
        acq: AcquisitionLike,
        acq_id: str,
        error: str,
        start: asyncio.Future[None] | None,
    ) -> None:
        """File the acquisition as FAILED with ``error``, release the engine, free the slot."""
        try:
            if start is not None:  # a cancelled arm: let the start call in its thread return
                try:
                    await start
                except Exception as exc:
                    error = f"{error}; start failed: {exc}"
            await asyncio.to_thread(acq.abort)
            finished = await asyncio.to_thread(acq.wait, _FAIL_WAIT)
            if not finished:
                logger.warning(
                    "acquisition %s: threads still running %.0f s after a failed start; "
                    "closing it in the background",
                    acq_id,
                    _FAIL_WAIT,
                )
            # close() waits for the threads: in its own thread, so the pool and threads are
            # released whenever they end, without holding up the loop or the slot
            await self._close_engine(acq_id, acq, _CLOSE_WAIT if finished else 0.0)
            info = acq.info()
            info = info.model_copy(
                update={
                    "state": AcquisitionState.FAILED,
                    "error": error,
                    "finished_at": info.finished_at
                    or datetime.now(UTC).isoformat(timespec="milliseconds"),
                }
            )
            await asyncio.to_thread(self._records.history.save, info, replace_final=True)
            self._records.publish(Event("state", info))
        except Exception:
            logger.exception("acquisition %s: clean-up after a failed start failed", acq_id)
        finally:
            if self.current is acq:
                self.current, self.current_id = None, None

    async def _close_engine(self, acq_id: str, acq: AcquisitionLike, timeout: float | None) -> bool:
        """``acq.close()`` in its own thread; True if it finished within ``timeout`` s."""
        return await self._closers.close(acq_id, acq.close, timeout)

    async def _watch(self, acq: AcquisitionLike) -> None:
        while not await asyncio.to_thread(acq.wait, _WATCH_PERIOD):
            pass
        await self._finalize(acq)

    async def _finalize(
        self,
        acq: AcquisitionLike,
        *,
        close_timeout: float | None = None,
        shutting_down: bool = False,
    ) -> None:
        """File the finished acquisition: history, lifetime totals, free the slot (always)."""
        if self.current is not acq:
            return
        acq_id = self.current_id or acq.info().id
        try:
            if not await self._close_engine(acq_id, acq, close_timeout):
                logger.error(
                    "acquisition %s: engine did not close within %s s; left to its threads",
                    acq_id,
                    close_timeout,
                )
            info = acq.info()
            if shutting_down and not info.state.is_final:
                info = info.model_copy(
                    update={
                        "state": AcquisitionState.FAILED,
                        "error": info.error or "service shut down before the acquisition ended",
                        "finished_at": info.finished_at
                        or datetime.now(UTC).isoformat(timespec="milliseconds"),
                    }
                )
            # refused if it was filed FAILED already (a failed start)
            await asyncio.to_thread(self._records.history.save, info)
            self._records.totals.add(info.counters, acq.latency_histogram())
            previous = self._records.forget(info.id)
            if previous is not None and previous != info.state:
                self._records.publish(Event("state", info))
            logger.info("acquisition %s %s", info.id, info.state.value)
        finally:
            if self.current is acq:
                self.current, self.current_id = None, None
