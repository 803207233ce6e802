"""Maps as PNG images: viridis colour map, robust limits, NaN (not filled) in dark grey.

The summed pattern is shown on a log scale. Pillow writes the PNG.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: viridis at 33 evenly spaced stops (matplotlib's table), interpolated linearly to 256
_VIRIDIS_STOPS = (
    "440154470d6048186a482374472d7b4537814240863e49893b528b375b8d33638d2f6b8e2c728e297a8e"
    "26828e23898e21918c1f988b1fa08822a78528ae8032b67a3fbc734ec36b5ec96270cf5784d44b98d83e"
    "addc30c2df23d8e219ece51bfde725"
)
_NAN_RGB = (40, 40, 40)


def viridis_lut() -> np.ndarray:
    """(256, 3) uint8 viridis table."""
    stops = np.frombuffer(bytes.fromhex(_VIRIDIS_STOPS), dtype=np.uint8).reshape(-1, 3)
    x = np.linspace(0, 1, stops.shape[0])
    t = np.linspace(0, 1, 256)
    return (
        np.stack([np.interp(t, x, stops[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)
    )


def limits(arr: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles of the finite values ((0, 1) when there are none)."""
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [1, 99]))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def to_png(arr: np.ndarray, log: bool = False) -> bytes:
    """A 2-D array as an RGB PNG (viridis; NaN dark grey); ``log``: log10(1 + value)."""
    a = np.asarray(arr, dtype=np.float64)
    if log:
        a = np.log10(1.0 + np.clip(a, 0, None))
    lo, hi = limits(a)
    finite = np.isfinite(a)
    idx = np.zeros(a.shape, dtype=np.uint8)
    idx[finite] = np.clip((a[finite] - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    rgb = viridis_lut()[idx]
    rgb[~finite] = _NAN_RGB
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()
