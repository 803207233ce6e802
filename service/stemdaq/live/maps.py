"""The live maps of one acquisition: virtual images per scan position, and what changed.

:class:`LiveMaps` keeps, per scan position, the five reduced sums of its frame (see
:mod:`stemdaq.live.kernels`), whether the position is in (``filled``), and, while memory
allows, the frame binned to at most 32 x 32. A geometry change recomputes every filled
position at once from that copy (an approximation at the binned resolution); frames reduced
after the change are exact. Readers (the API, the WebSocket) take copies under a short lock;
each update bumps a version and marks the scan rows it touched, so a client gets only the
rows that changed since its last version.
"""

from __future__ import annotations

import threading

import numpy as np

from stemdaq.live import kernels
from stemdaq.live.geometry import Detectors

#: scan-shaped maps, in the order of the WebSocket's rows
MAP_NAMES = ("bf", "adf", "total", "com_x", "com_y", "com_magnitude")
#: bytes the binned copies may take, at most (per acquisition)
LOWRES_BYTES = 32 << 20  # with the rest of the process, under the 300 MB the soak allows
#: binned sizes tried, finest first
LOWRES_BINS = (32, 16, 8)


class LiveMaps:
    """Virtual images of a scan, updated by batches of frames from one thread.

    Parameters
    ----------
    scan_shape
        (n_m, n_k); position ``p`` is row ``p // n_k``.
    frame_shape
        (ny, nx).
    detectors
        The geometry to start with.
    lowres_bytes
        Memory for the binned copies; 0: none (a geometry change then applies from then on).
    """

    def __init__(
        self,
        scan_shape: tuple[int, int],
        frame_shape: tuple[int, int],
        detectors: Detectors,
        lowres_bytes: int = LOWRES_BYTES,
    ) -> None:
        self.scan_shape = (int(scan_shape[0]), int(scan_shape[1]))
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        n = self.scan_shape[0] * self.scan_shape[1]
        self.n_positions = n
        self.lock = threading.Lock()
        self._raw = np.zeros((n, kernels.N_COLUMNS), dtype=np.float32)
        self._filled = np.zeros(n, dtype=bool)
        self.version = 0
        self._row_version = np.zeros(self.scan_shape[0], dtype=np.int64)
        self.detectors = detectors
        # made on first use, by the thread that sums frames: not at file open, in the data
        # thread, while the first frames wait (1024x1024 frames: ~0.1 s)
        self._weights: np.ndarray | None = None
        self._binner: kernels.Binner | None = None
        self._low: np.ndarray | None = None
        for bins in LOWRES_BINS:
            binner = kernels.Binner(self.frame_shape, bins)
            if n * binner.size * 4 <= lowres_bytes:
                self._binner = binner
                self._low = np.zeros((n, binner.size), dtype=np.float32)  # pages on first use
                break
        self.recomputed = 0  # geometry changes applied

    @property
    def lowres_shape(self) -> tuple[int, int] | None:
        """Shape of the retained binned frames; None when none are kept."""
        return self._binner.shape if self._binner is not None else None

    @property
    def filled_count(self) -> int:
        """Positions in the maps."""
        return int(np.count_nonzero(self._filled))

    # -- the writer of the maps (one thread) -----------------------------------------------------

    def add(self, positions: np.ndarray, batch: np.ndarray) -> None:
        """Reduce ``batch`` (B x ny x nx, float32) into the maps at ``positions`` (B,)."""
        b = batch.shape[0]
        if b == 0:
            return
        weights = self._weights
        if weights is None:
            made = kernels.weight_matrix(self.frame_shape, self.detectors)
            with self.lock:  # a geometry set meanwhile wins
                if self._weights is None:
                    self._weights = made
                weights = self._weights
        raw = kernels.reduce(batch.reshape(b, -1), weights)
        low = self._binner.bin(batch) if self._binner is not None else None
        with self.lock:
            current = self._weights
            if current is not weights and current is not None and low is not None:
                # the geometry changed meanwhile
                raw = low @ self._binner.weights(current)  # type: ignore[union-attr]
            self._raw[positions] = raw
            self._filled[positions] = True
            if low is not None and self._low is not None:
                self._low[positions] = low
            self.version += 1
            self._row_version[positions // self.scan_shape[1]] = self.version

    # -- control -------------------------------------------------------------------------------

    def set_detectors(self, detectors: Detectors) -> bool:
        """Use a new geometry; recompute filled positions from the binned copy when kept.

        Returns True when the maps were recomputed (False: no copy, new frames only).
        """
        weights = kernels.weight_matrix(self.frame_shape, detectors)
        low_weights = self._binner.weights(weights) if self._binner is not None else None
        with self.lock:
            self.detectors = detectors
            self._weights = weights
            if low_weights is None or self._low is None:
                return False
            idx = np.flatnonzero(self._filled)
            self._raw[idx] = self._low[idx] @ low_weights
            self.version += 1
            self._row_version[:] = self.version
            self.recomputed += 1
        return True

    # -- readers -------------------------------------------------------------------------------

    def filled(self) -> np.ndarray:
        """(n_m, n_k) bool: positions in the maps."""
        with self.lock:
            return self._filled.reshape(self.scan_shape).copy()

    def images(self) -> dict[str, np.ndarray]:
        """Every map, (n_m, n_k) float32, NaN where not filled."""
        with self.lock:
            raw = self._raw.copy()
            filled = self._filled.copy()
        out = {}
        for name, v in kernels.values(raw).items():
            img = np.where(filled, v, np.nan).astype(np.float32)
            out[name] = img.reshape(self.scan_shape)
        return out

    def raw_rows_since(self, version: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(now, rows, raw, filled): the scan rows changed after ``version`` that hold a filled
        position, their reduced sums (len(rows), n_k, 5) and filled mask (len(rows), n_k).

        What a rank sends the service (``GET /rank/live/maps.npz``): rows it does not own
        never have a filled position, so they never travel.
        """
        n_k = self.scan_shape[1]
        with self.lock:
            now = self.version
            rows = np.flatnonzero(self._row_version > version)
            filled = self._filled.reshape(-1, n_k)[rows]
            keep = filled.any(axis=1)
            rows, filled = rows[keep], filled[keep]
            raw = self._raw.reshape(-1, n_k, kernels.N_COLUMNS)[rows]
        return now, rows, raw, filled

    def put_rows(self, rows: np.ndarray, raw: np.ndarray, filled: np.ndarray) -> None:
        """Take reduced sums computed elsewhere (a rank's :meth:`raw_rows_since`) at the
        positions of ``rows`` that ``filled`` marks; the others stay as they are."""
        if rows.size == 0:
            return
        n_k = self.scan_shape[1]
        idx = (rows[:, None] * n_k + np.arange(n_k)[None, :]).ravel()
        take = np.asarray(filled, dtype=bool).ravel()
        with self.lock:
            self._raw[idx[take]] = np.asarray(raw, dtype=np.float32).reshape(-1, raw.shape[-1])[
                take
            ]
            self._filled[idx[take]] = True
            self.version += 1
            self._row_version[rows] = self.version

    def rows_since(self, version: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(now, rows, data): the scan rows changed after ``version`` and their values.

        ``data`` is (len(MAP_NAMES), len(rows), n_k) float32, NaN where not filled.
        """
        n_k = self.scan_shape[1]
        with self.lock:
            now = self.version
            rows = np.flatnonzero(self._row_version > version)
            idx = (rows[:, None] * n_k + np.arange(n_k)[None, :]).ravel()
            raw = self._raw[idx]
            filled = self._filled[idx]
        vals = kernels.values(raw)
        data = np.empty((len(MAP_NAMES), rows.size, n_k), dtype=np.float32)
        for i, name in enumerate(MAP_NAMES):
            data[i] = np.where(filled, vals[name], np.nan).reshape(rows.size, n_k)
        return now, rows, data
