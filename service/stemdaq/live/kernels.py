"""The virtual detectors as one matrix product, and the low-resolution copy of a frame.

A batch of frames, flattened and converted to float32 (B x pixels), times a (pixels x 5)
weight matrix gives per frame, at once: the total intensity, the bright-field disk sum, the
annular dark-field sum and the two first moments about the beam centre (the centre of mass
numerators). Measured with ``bench/live_kernels.py`` (192x192 uint16, batches of 32, one core):
conversion + product about 27 us per frame with OpenBLAS on one thread; a numba kernel that
reads the integers directly about 12 us (see docs/ARCHITECTURE.md "Live view"). numpy is kept:
the product is a small part of a frame's cost (decode and the exact sums are the rest), and
numba would be a new dependency with a JIT pause at the first frame.

Masks: a pixel (x, y), at integer coordinates, is in the disk when ``r <= bf_radius`` and in
the annulus when ``adf_inner <= r < adf_outer``, with ``r`` its distance from the centre.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from stemdaq.live.geometry import Detectors

logger = logging.getLogger(__name__)

#: columns of the reduction, in order
COLUMNS = ("total", "bf", "adf", "moment_x", "moment_y")
N_COLUMNS = len(COLUMNS)


def weight_matrix(frame_shape: tuple[int, int], det: Detectors) -> np.ndarray:
    """(pixels x 5) float32 weights: ones, disk mask, annulus mask, x - cx, y - cy."""
    ny, nx = frame_shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    cx, cy = det.center
    r = np.hypot(xx - cx, yy - cy)
    w = np.empty((ny * nx, N_COLUMNS), dtype=np.float32)
    w[:, 0] = 1.0
    w[:, 1] = (r <= det.bf_radius).ravel()
    w[:, 2] = ((r >= det.adf_inner) & (r < det.adf_outer)).ravel()
    w[:, 3] = (xx - cx).ravel()
    w[:, 4] = (yy - cy).ravel()
    return w


@functools.cache
def single_thread_blas() -> None:
    """Keep BLAS on one thread (once per process), even when numpy loaded before stemdaq set
    ``OMP_NUM_THREADS=1``: measured, OpenBLAS' own threads made the product 3x as expensive on
    2 busy cores (341 against 105 us per frame of the whole live path), and their CPU escapes the
    budget's thread clock."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; without it OMP_NUM_THREADS is relied on
        return
    threadpool_limits(limits=1, user_api="blas")


def reduce(batch: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B x pixels) float32 frames -> (B x 5) sums (see :data:`COLUMNS`)."""
    out: np.ndarray = batch @ weights
    return out


def values(raw: np.ndarray) -> dict[str, np.ndarray]:
    """The maps' values from reduced sums (..., 5): bf, adf, total, com_x, com_y, com_magnitude.

    The centre of mass is in pixels from the beam centre; NaN where a frame has no counts.
    """
    total = raw[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        com_x = np.where(total > 0, raw[..., 3] / total, np.nan)
        com_y = np.where(total > 0, raw[..., 4] / total, np.nan)
    return {
        "bf": raw[..., 1],
        "adf": raw[..., 2],
        "total": total,
        "com_x": com_x.astype(np.float32),
        "com_y": com_y.astype(np.float32),
        "com_magnitude": np.hypot(com_x, com_y).astype(np.float32),
    }


class Binner:
    """Bin frames to at most ``bins`` x ``bins`` (a retained copy to recompute maps from).

    Bins are as even as the frame allows (``index * bins // size``).
    """

    def __init__(self, frame_shape: tuple[int, int], bins: int) -> None:
        ny, nx = frame_shape
        self.shape = (min(bins, ny), min(bins, nx))
        by, bx = self.shape
        self._x = np.zeros((nx, bx), dtype=np.float32)
        self._x[np.arange(nx), np.arange(nx) * bx // nx] = 1.0
        ybin = np.arange(ny) * by // ny
        self._y_starts = np.searchsorted(ybin, np.arange(by))
        xbin = np.arange(nx) * bx // nx
        self._counts = np.outer(np.bincount(ybin, minlength=by), np.bincount(xbin, minlength=bx))
        self._flat_bin = (ybin[:, None] * bx + xbin[None, :]).ravel()
        self.frame_shape = (ny, nx)

    @property
    def size(self) -> int:
        """Values per binned frame."""
        return self.shape[0] * self.shape[1]

    def bin(self, batch: np.ndarray) -> np.ndarray:
        """(B x ny x nx) float32 -> (B x size) float32 bin sums.

        y first (adding whole rows is the fast direction: 28 against 46 us per 192x192 frame
        for x first), by a reshape when the bins divide the frame, else ``np.add.reduceat``;
        then x on the smaller array.
        """
        b = batch.shape[0]
        ny, nx = self.frame_shape
        by, bx = self.shape
        if ny % by == 0:
            ys = batch.reshape(b, by, ny // by, nx).sum(axis=2)
        else:
            ys = np.add.reduceat(batch, self._y_starts, axis=1)
        if nx % bx == 0:
            out: np.ndarray = ys.reshape(b, by, bx, nx // bx).sum(axis=3)
        else:
            out = ys.reshape(b * by, nx) @ self._x
        return out.reshape(b, self.size)

    def weights(self, weights: np.ndarray) -> np.ndarray:
        """Fine (pixels x k) weights -> (size x k): each bin's mean weight."""
        k = weights.shape[1]
        out = np.empty((self.size, k), dtype=np.float32)
        counts = self._counts.ravel()
        for j in range(k):
            total = np.bincount(self._flat_bin, weights=weights[:, j], minlength=self.size)
            out[:, j] = total / counts
        return out
