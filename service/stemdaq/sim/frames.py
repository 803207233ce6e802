"""Synthetic but physical 4D-STEM diffraction frames.

Each frame is what a counting detector sees with a focused probe on a thin crystal: a bright-field
disk whose intensity drops over atomic columns and whose centre is deflected by their projected
field (the contrast DPC/iDPC images show), a weak diffuse halo and an amorphous ring outside it,
all with Poisson counting noise. A frame depends only on ``(seed, image_id, channel)``, never on
the order frames are asked for, so a test can recompute any frame and compare it bit for bit with
what the receiver wrote.

Speed: the disk is drawn from precomputed sub-pixel templates and only its bounding box gets a
dense Poisson draw; the sparse halo is drawn as a Poisson number of events placed by inverse CDF.
"""

from __future__ import annotations

import math

import numpy as np

from stemdaq.errors import ConfigError

DTYPES = ("uint8", "uint16", "uint32")
_SUBPIXEL = 4  # templates per pixel along each axis


def default_scan_shape(n_images: int) -> tuple[int, int]:
    """A square-ish (n_m, n_k) that holds ``n_images``: rows of ``ceil(sqrt(n))`` positions."""
    n = max(1, int(n_images))
    n_k = math.isqrt(n)
    if n_k * n_k < n:
        n_k += 1
    return (-(-n // n_k), n_k)


class FrameGenerator:
    """Deterministic synthetic diffraction frames.

    Parameters
    ----------
    frame_shape
        ``(ny, nx)`` of one frame, 8 .. 4096 per axis.
    dtype
        ``uint8``, ``uint16`` or ``uint32``; counts are clipped to the dtype's maximum.
    scan_shape
        ``(n_m, n_k)``; ``image_id`` maps row-major to scan position ``(m, k)`` (and wraps).
    seed
        Same seed, same frames.
    dose
        Mean counts per pixel in the middle of the bright-field disk, over vacuum.
    deflection
        ``(a, b)``: instead of the sample's own field, deflect the disk by a known amount,
        ``a * (k - n_k / 2)`` pixels in x and ``b * (m - n_m / 2)`` in y at scan position
        ``(m, k)`` (a centre-of-mass map must reproduce it); ``(0, 0)``: the sample's field.
    """

    def __init__(
        self,
        frame_shape: tuple[int, int] = (96, 96),
        dtype: str = "uint16",
        scan_shape: tuple[int, int] = (64, 64),
        seed: int = 0,
        dose: float = 20.0,
        deflection: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        ny, nx = (int(v) for v in frame_shape)
        if not (8 <= ny <= 4096 and 8 <= nx <= 4096):
            raise ConfigError(f"frame_shape {frame_shape} out of range 8..4096")
        if str(dtype) not in DTYPES:
            raise ConfigError(f"dtype {dtype!r} not one of {DTYPES}")
        n_m, n_k = (max(1, int(v)) for v in scan_shape)
        self.frame_shape = (ny, nx)
        self.dtype = np.dtype(dtype)
        self.scan_shape = (n_m, n_k)
        self.seed = int(seed)
        self.dose = float(dose)
        self.deflection = (float(deflection[0]), float(deflection[1]))
        self._max = int(np.iinfo(self.dtype).max)
        self.disk_radius = max(2.0, min(ny, nx) / 8.0)
        self._build_sample()
        self._build_templates()
        self._build_halo()

    # -- precomputation ------------------------------------------------------------------------

    def _build_sample(self) -> None:
        """Transmission and beam deflection per scan position: a lattice of atomic columns."""
        n_m, n_k = self.scan_shape
        m, k = np.mgrid[0:n_m, 0:n_k].astype(np.float64)
        period = max(4.0, min(n_m, n_k) / 6.0)  # ~6 unit cells across the scan
        sigma = period / 5.0
        cols = np.zeros_like(m)
        grad_m = np.zeros_like(m)
        grad_k = np.zeros_like(m)
        # two columns per cell (a "dumbbell" basis) so the pattern is not a plain grid
        for (om, ok), weight in (((0.0, 0.0), 1.0), ((0.5, 0.5), 0.6)):
            dm = (m / period - om + 0.5) % 1.0 - 0.5
            dk = (k / period - ok + 0.5) % 1.0 - 0.5
            g = weight * np.exp(-((dm * period) ** 2 + (dk * period) ** 2) / (2 * sigma**2))
            cols += g
            grad_m += -g * dm * period / sigma**2
            grad_k += -g * dk * period / sigma**2
        # a slow thickness wedge across the field of view
        wedge = 0.15 * (k / max(1, n_k - 1))
        self._transmission = np.clip(1.0 - 0.35 * cols - wedge, 0.2, 1.0)
        deflect = 0.12 * self.disk_radius * sigma  # pixels of disk shift at the steepest field
        self._shift_y = deflect * grad_m
        self._shift_x = deflect * grad_k
        a, b = self.deflection
        if a or b:  # a known deflection instead of the sample's field
            self._shift_x = a * (k - n_k / 2)
            self._shift_y = b * (m - n_m / 2)

    def disk_center(self, m: int, k: int) -> tuple[float, float]:
        """Centre (x, y) of the bright-field disk at scan position ``(m, k)``, pixels."""
        ny, nx = self.frame_shape
        return (nx - 1) / 2 + float(self._shift_x[m, k]), (ny - 1) / 2 + float(self._shift_y[m, k])

    def _build_templates(self) -> None:
        """Soft-edged disk templates at ``_SUBPIXEL`` x ``_SUBPIXEL`` sub-pixel offsets."""
        r0 = self.disk_radius
        half = int(math.ceil(r0)) + 3
        size = 2 * half + 1
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        templates = np.empty((_SUBPIXEL, _SUBPIXEL, size, size), dtype=np.float64)
        for fy in range(_SUBPIXEL):
            for fx in range(_SUBPIXEL):
                r = np.hypot(yy - half - fy / _SUBPIXEL, xx - half - fx / _SUBPIXEL)
                templates[fy, fx] = 0.5 * (1.0 - np.tanh((r - r0) / 0.7))
        self._templates = templates
        self._half = half

    def _build_halo(self) -> None:
        """Sparse diffuse scattering outside the disk: Lorentzian halo plus an amorphous ring."""
        ny, nx = self.frame_shape
        yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
        r = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2)
        r0 = self.disk_radius
        halo = 1.0 / (1.0 + (r / (1.5 * r0)) ** 2)
        ring = 0.6 * np.exp(-((r - 2.6 * r0) ** 2) / (2 * (0.25 * r0) ** 2))
        weight = (halo + ring).ravel()
        self._halo_cdf = np.cumsum(weight) / weight.sum()
        # ~0.01 counts per pixel on average at full dose: sparse, as in a counting detector
        self._halo_mean = 0.0005 * self.dose * ny * nx

    # -- public ---------------------------------------------------------------------------------

    @property
    def n_positions(self) -> int:
        """Scan positions ``n_m * n_k``."""
        return self.scan_shape[0] * self.scan_shape[1]

    def position(self, image_id: int) -> tuple[int, int]:
        """Scan position ``(m, k)`` of ``image_id`` (row-major, wrapping past the scan)."""
        return divmod(int(image_id) % self.n_positions, self.scan_shape[1])

    def frame(self, image_id: int, channel: int = 0) -> np.ndarray:
        """The frame ``image_id`` of ``channel`` (0 = threshold_1): ``(ny, nx)`` array of dtype."""
        rng = np.random.Generator(np.random.PCG64([self.seed, int(image_id), int(channel)]))
        ny, nx = self.frame_shape
        m, k = self.position(image_id)
        # a higher threshold counts fewer electrons
        scale = self.dose / (1.0 + channel)
        counts = np.zeros(ny * nx, dtype=np.int64)
        halo_mean = self._halo_mean / (1.0 + channel) * (1.2 - self._transmission[m, k])
        n_halo = int(rng.poisson(halo_mean))
        if n_halo:
            idx = np.searchsorted(self._halo_cdf, rng.random(n_halo), side="right")
            np.minimum(idx, ny * nx - 1, out=idx)
            counts += np.bincount(idx, minlength=ny * nx)
        counts2d = counts.reshape(ny, nx)
        cx, cy = self.disk_center(m, k)
        iy, ix = math.floor(cy), math.floor(cx)
        fy = min(_SUBPIXEL - 1, int((cy - iy) * _SUBPIXEL))
        fx = min(_SUBPIXEL - 1, int((cx - ix) * _SUBPIXEL))
        lam = self._templates[fy, fx] * (scale * self._transmission[m, k])
        h = self._half
        y0, x0 = iy - h, ix - h
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(ny, y0 + lam.shape[0]), min(nx, x0 + lam.shape[1])
        if ye > ys and xe > xs:
            window = lam[ys - y0 : ye - y0, xs - x0 : xe - x0]
            counts2d[ys:ye, xs:xe] += rng.poisson(window)
        np.minimum(counts2d, self._max, out=counts2d)
        return counts2d.astype(self.dtype)
