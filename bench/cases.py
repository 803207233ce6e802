"""The benchmark cases: frame shape, dtype, how the detector sends frames, how many.

Frame counts are chosen so that the scan shape (``rows x cols``, one position per frame) is
exact: the scan always has as many positions as the sender sends frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: the output dataset of stemdaq's NeXus file, [n_m, n_k, ny, nx]
STEMDAQ_DATASET = "/entry/measurement/event1/image1/image_4d/intensity"
#: the output dataset of the benchmark's own writers, [n, ny, nx]
BENCH_DATASET = "data"
#: distinct frames the sender cycles through (frame i is template i % TEMPLATES)
TEMPLATES = 16


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    Parameters
    ----------
    name
        Shown in the table.
    shape
        Frame shape ``(ny, nx)``.
    dtype
        numpy dtype name of the pixels.
    codec
        ``bslz4`` (the detector compresses) or ``raw`` (stemdaq compresses).
    frames, quick_frames
        Frames sent in a full run and with ``--quick``.
    protocol
        ``stream2`` (CBOR) or ``stream1`` (JSON multipart).
    """

    name: str
    shape: tuple[int, int]
    dtype: str
    codec: str
    frames: int
    quick_frames: int
    protocol: str = "stream2"

    @property
    def frame_nbytes(self) -> int:
        """Bytes of one uncompressed frame."""
        return self.shape[0] * self.shape[1] * np.dtype(self.dtype).itemsize

    @property
    def slug(self) -> str:
        """The name as a file-name part."""
        return self.name.replace(" ", "_")


CASES = [
    Case("192x192 u16 bslz4", (192, 192), "uint16", "bslz4", 200_000, 20_000),
    Case("512x512 u16 bslz4", (512, 512), "uint16", "bslz4", 40_000, 4_000),
    Case("256x256 u16 raw", (256, 256), "uint16", "raw", 40_000, 4_000),
    Case("1024x1024 u32 bslz4", (1024, 1024), "uint32", "bslz4", 10_000, 400),
    Case("192x192 u16 bslz4 v1", (192, 192), "uint16", "bslz4", 100_000, 10_000, "stream1"),
]
SOAK = Case("soak 96x96 u16 bslz4", (96, 96), "uint16", "bslz4", 1_000_000, 100_000)
#: the case of the final ``ratio_vs_transport=... ratio_vs_minimal=...`` line
HEADLINE = CASES[0].name


def by_name(name: str) -> Case:
    """The case called ``name`` (also the soak case)."""
    for case in (*CASES, SOAK):
        if case.name == name:
            return case
    raise KeyError(name)


def select(patterns: str) -> list[Case]:
    """Cases whose name contains any of the comma-separated substrings (all when empty).

    A pattern ending in ``$`` must match the end of the name (``"192x192 u16 bslz4$"`` picks
    the stream v2 case only).
    """
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    if not wanted:
        return list(CASES)
    return [c for c in CASES if any(_matches(c.name, p) for p in wanted)]


def _matches(name: str, pattern: str) -> bool:
    if pattern.endswith("$"):
        return name.endswith(pattern[:-1])
    return pattern in name


def scan_shape(n: int, multiple_of: int = 1) -> tuple[int, int]:
    """``(rows, cols)`` with ``rows * cols == n``, cols the smallest divisor >= sqrt(n).

    With ``multiple_of`` (frames per chunk) cols is also a multiple of it where ``n`` allows.
    """
    first = math.isqrt(n - 1) + 1 if n > 1 else 1
    divisors = [d for d in range(first, n + 1) if n % d == 0]
    for d in divisors:
        if d % multiple_of == 0:
            return n // d, d
    return n // divisors[0], divisors[0]


def synthetic_frames(case: Case, n: int = TEMPLATES) -> list[np.ndarray]:
    """A few sparse, detector-like frames (a bright disk on a Poisson background)."""
    rng = np.random.default_rng(1)
    ny, nx = case.shape
    yy, xx = np.mgrid[:ny, :nx]
    frames = []
    for i in range(n):
        disk = ((yy - ny / 2 - i % 3) ** 2 + (xx - nx / 2) ** 2) < (min(ny, nx) / 8) ** 2
        lam = 0.05 + 20.0 * disk
        frames.append(rng.poisson(lam).astype(case.dtype))
    return frames


def sample_indices(n: int, samples: int = 32) -> Iterable[int]:
    """Frame indices read back for the bit-exact check (first, last and spread between)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(samples, n)).astype(int)})
