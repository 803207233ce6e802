"""A fake acquisition engine with the interface of ``stemdaq.acquisition.Acquisition``.

The stream endpoint steers it: ``fake://`` completes by itself at ``fake_rate`` frames/s,
``fake://hold`` waits for stop/abort after half the frames, ``fake://detector-refuses`` raises
:class:`DetectorError` from ``start``. On close it writes a small HDF5 file like the real one
(``<name>.partial`` renamed to ``<name>``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
from stemdaq.config import AcquisitionConfig
from stemdaq.errors import DetectorError
from stemdaq.models import AcquisitionInfo, AcquisitionState, Counters, DropReason

FAKE_RATE = 2000.0  # frames/s


class FakeAcquisition:
    """Same methods and threading behaviour as the real engine, no detector needed."""

    instances: list[FakeAcquisition] = []

    def __init__(
        self,
        config: AcquisitionConfig,
        file_path: Path,
        *,
        acq_id: str = "0",
        queue_size: int = 4096,
        compress_workers: int = 2,
        on_change: Callable[[AcquisitionInfo], None] | None = None,
    ) -> None:
        self.config = config
        self.file_path = Path(file_path)
        self.acq_id = acq_id
        self._on_change = on_change
        self._state = AcquisitionState.ARMED
        self._written = 0
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._created = datetime.now(UTC).isoformat()
        self._finished: str | None = None
        self.closed = False
        FakeAcquisition.instances.append(self)

    @property
    def state(self) -> AcquisitionState:
        return self._state

    def start(self) -> None:
        endpoint = self.config.resolved_stream_endpoint()
        if "bad-endpoint" in endpoint:  # like ZmqSource failing before any thread starts
            raise ValueError(f"invalid endpoint {endpoint}")
        self._thread = threading.Thread(target=self._run, name=f"fake-{self.acq_id}", daemon=True)
        self._thread.start()
        if "detector-refuses" in endpoint:  # like the engine: threads run, abort, raise
            self.abort()
            raise DetectorError("SIMPLON arm refused: 503 detector busy")
        self._notify()

    def stop(self) -> None:
        self._stop.set()

    def abort(self) -> None:
        self._abort.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def close(self) -> None:
        if not self._done.is_set():
            self.abort()
            if self._thread is not None:
                self._done.wait()
        self.closed = True

    def latency_histogram(self) -> tuple[list[float], list[int], float]:
        bounds = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1, 1.0, float("inf")]
        n = self._written
        return bounds, [0, 0, 0, n // 2, n, n, n, n, n, n, n, n], n * 1e-4

    def info(self) -> AcquisitionInfo:
        expected = self.config.n_positions
        dropped = {r.value: 0 for r in DropReason}
        return AcquisitionInfo(
            id=self.acq_id,
            state=self._state,
            file_path=str(self.file_path),
            file_uri=self.file_path.as_uri(),
            shape=[*self.config.scan_shape, 8, 8]
            if self._state != AcquisitionState.ARMED
            else None,
            dtype="uint16",
            chunk_shape=[1, 1, 8, 8],
            channels=["threshold_1"],
            frames_expected=expected,
            frames_written=self._written,
            counters=Counters(
                frames_expected=expected,
                frames_received=self._written,
                frames_written=self._written,
                dropped=dropped,
                bytes_written=self._written * 100,
            ),
            frames_per_second=FAKE_RATE if self._state == AcquisitionState.ACQUIRING else 0.0,
            created_at=self._created,
            finished_at=self._finished,
            config=self.config.model_dump(mode="json"),
        )

    def _set(self, state: AcquisitionState) -> None:
        self._state = state
        self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change(self.info())

    def _run(self) -> None:
        expected = self.config.n_positions
        hold = "hold" in (self.config.stream_endpoint or "")
        time.sleep(0.05)
        self._set(AcquisitionState.ACQUIRING)
        final = AcquisitionState.COMPLETED
        t0 = time.monotonic()
        next_tick = t0 + 0.2
        while self._written < expected:
            if self._abort.is_set():
                final = AcquisitionState.ABORTED
                break
            target = min(expected, int((time.monotonic() - t0) * FAKE_RATE))
            if hold:
                target = min(target, expected // 2)
                if self._stop.is_set():
                    target = expected
            self._written = max(self._written, target)
            if time.monotonic() > next_tick:
                next_tick += 0.2
                self._notify()
            time.sleep(0.005)
        self._set(AcquisitionState.FINISHING)
        partial = self.file_path.with_name(self.file_path.name + ".partial")
        with h5py.File(partial, "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.create_dataset("title", data="fake")
            entry.create_dataset(  # no data written: fill value only, like gaps
                "data",
                shape=(*self.config.scan_shape, 8, 8),
                dtype=np.uint16,
                chunks=(1, 1, 8, 8),
                compression="gzip",
            )
        partial.rename(self.file_path)
        self._finished = datetime.now(UTC).isoformat()
        self._state = final
        self._done.set()
        self._notify()
