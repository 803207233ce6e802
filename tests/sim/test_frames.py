"""FrameGenerator: deterministic, physical, fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
from stemdaq.errors import ConfigError
from stemdaq.sim import FrameGenerator, default_scan_shape


def test_same_seed_same_frames_in_any_order() -> None:
    a = FrameGenerator((96, 96), "uint16", (8, 8), seed=3)
    b = FrameGenerator((96, 96), "uint16", (8, 8), seed=3)
    forward = [a.frame(i) for i in range(10)]
    backward = [b.frame(i) for i in reversed(range(10))][::-1]
    for x, y in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.frame(4), forward[4])  # recomputed later, still equal


def test_different_seeds_and_frames_differ() -> None:
    a = FrameGenerator((96, 96), "uint16", (8, 8), seed=0)
    b = FrameGenerator((96, 96), "uint16", (8, 8), seed=1)
    assert not np.array_equal(a.frame(0), b.frame(0))
    assert not np.array_equal(a.frame(0), a.frame(1))
    assert not np.array_equal(a.frame(0, channel=0), a.frame(0, channel=1))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("shape", [(96, 96), (192, 192), (97, 130), (1024, 1024)])
def test_shapes_and_dtypes(dtype: str, shape: tuple[int, int]) -> None:
    f = FrameGenerator(shape, dtype, (4, 4), seed=1).frame(5)
    assert f.shape == shape and f.dtype == np.dtype(dtype)
    assert f.sum() > 0


def test_uint8_is_clipped_not_wrapped() -> None:
    f = FrameGenerator((96, 96), "uint8", (4, 4), seed=0, dose=1000).frame(0)
    assert f.max() == 255


def test_bright_field_disk_moves_and_dims_with_scan_position() -> None:
    g = FrameGenerator((96, 96), "uint32", (24, 24), seed=0, dose=200)
    frames = np.stack([g.frame(i).astype(np.float64) for i in range(g.n_positions)])
    ny, nx = g.frame_shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    disk = np.hypot(yy - 47.5, xx - 47.5) < g.disk_radius + 2
    bright = frames[:, disk].sum(axis=1)
    assert frames[:, disk].mean() > 20 * frames[:, ~disk].mean()  # a bright disk on a dark field
    assert bright.max() / bright.min() > 1.3  # sample contrast in the bright-field image
    com_x = (frames * xx).sum(axis=(1, 2)) / frames.sum(axis=(1, 2))
    assert com_x.max() - com_x.min() > 0.5  # DPC: the disk moves with the scan position


def test_positions_and_default_scan_shape() -> None:
    g = FrameGenerator((96, 96), "uint16", (3, 4))
    assert g.position(0) == (0, 0) and g.position(5) == (1, 1) and g.position(12) == (0, 0)
    assert default_scan_shape(64) == (8, 8)
    assert default_scan_shape(60) == (8, 8)
    assert default_scan_shape(10) == (3, 4)


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        FrameGenerator((96, 96), "int16")
    with pytest.raises(ConfigError):
        FrameGenerator((4, 96), "uint16")


def test_192x192_uint16_under_a_millisecond() -> None:
    g = FrameGenerator((192, 192), "uint16", (64, 64), seed=0)
    g.frame(0)
    best = float("inf")
    for _ in range(3):  # best of three batches: robust to a busy machine
        t0 = time.perf_counter()
        for i in range(200):
            g.frame(i)
        best = min(best, (time.perf_counter() - t0) / 200)
    assert best < 1e-3, f"{best * 1e3:.2f} ms per frame"
