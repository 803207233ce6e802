"""The live view's kernels against a plain numpy reference, on random frames and geometries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stemdaq.errors import ConfigError
from stemdaq.live import kernels
from stemdaq.live.geometry import Detectors, DetectorsRequest, check_in_frame, find_disk, resolve
from stemdaq.live.maps import LiveMaps


def reference(frame: np.ndarray, det: Detectors) -> dict[str, float]:
    """Pixel by pixel, in float64: what each virtual detector should read."""
    ny, nx = frame.shape
    cx, cy = det.center
    out = {"bf": 0.0, "adf": 0.0, "total": 0.0, "mx": 0.0, "my": 0.0}
    for y in range(ny):
        for x in range(nx):
            v = float(frame[y, x])
            r = math.hypot(x - cx, y - cy)
            out["total"] += v
            out["bf"] += v if r <= det.bf_radius else 0.0
            out["adf"] += v if det.adf_inner <= r < det.adf_outer else 0.0
            out["mx"] += v * (x - cx)
            out["my"] += v * (y - cy)
    t = out["total"]
    out["com_x"] = out["mx"] / t if t else math.nan
    out["com_y"] = out["my"] / t if t else math.nan
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, Detectors]:
    ny = draw(st.integers(4, 24))
    nx = draw(st.integers(4, 24))
    b = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31))
    lam = draw(st.floats(0.0, 50.0))
    frames = np.random.default_rng(seed).poisson(lam, (b, ny, nx)).astype(np.uint16)
    cx = draw(st.floats(0, nx - 1))
    cy = draw(st.floats(0, ny - 1))
    r = draw(st.floats(0.5, max(ny, nx)))
    inner = draw(st.floats(0, max(ny, nx)))
    outer = inner + draw(st.floats(0.5, max(ny, nx)))
    return frames, Detectors((cx, cy), r, inner, outer)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_maps_match_the_pixel_by_pixel_reference(case: tuple[np.ndarray, Detectors]) -> None:
    frames, det = case
    b, ny, nx = frames.shape
    maps = LiveMaps((1, b), (ny, nx), det)
    maps.add(np.arange(b), frames.astype(np.float32))
    images = maps.images()
    for i in range(b):
        ref = reference(frames[i], det)
        for name in ("bf", "adf", "total", "com_x", "com_y"):
            got = float(images[name][0, i])
            if math.isnan(ref[name]):
                assert math.isnan(got), name
            else:
                assert got == pytest.approx(ref[name], rel=1e-4, abs=1e-3), name
        assert float(images["com_magnitude"][0, i]) == pytest.approx(
            math.hypot(ref["com_x"], ref["com_y"]), rel=1e-4, abs=1e-3, nan_ok=True
        )
    assert maps.filled().all() and maps.filled_count == b


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 9), st.integers(0, 2**31))
def test_binning_keeps_every_count(ny: int, nx: int, bins: int, seed: int) -> None:
    frames = np.random.default_rng(seed).poisson(3.0, (2, ny, nx)).astype(np.float32)
    binner = kernels.Binner((ny, nx), bins)
    out = binner.bin(frames).reshape(2, *binner.shape)
    by, bx = binner.shape
    ybin = np.arange(ny) * by // ny
    xbin = np.arange(nx) * bx // nx
    for j in range(by):
        for i in range(bx):
            expect = frames[:, ybin == j][:, :, xbin == i].sum(axis=(1, 2))
            np.testing.assert_allclose(out[:, j, i], expect, rtol=1e-6)


def test_geometry_change_recomputes_from_the_binned_copy_then_exact() -> None:
    rng = np.random.default_rng(1)
    shape = (64, 64)
    frames = rng.poisson(5.0, (6, *shape)).astype(np.float32)
    first = Detectors((31.5, 31.5), 8.0, 12.0, 24.0)
    maps = LiveMaps((2, 3), shape, first)
    maps.add(np.arange(3), frames[:3])
    before = maps.version
    # the same geometry recomputed from 32x32 bins (2x2 pixels): totals exact, the rest close
    assert maps.set_detectors(first) is True and maps.version > before
    got = maps.images()
    for i in range(3):
        ref = reference(frames[i], first)
        assert got["total"][0, i] == pytest.approx(ref["total"], rel=1e-6)
        assert got["bf"][0, i] == pytest.approx(ref["bf"], rel=0.1)
    moved = Detectors((30.0, 33.0), 6.0, 10.0, 30.0)
    maps.set_detectors(moved)
    maps.add(np.arange(3, 6), frames[3:])  # new frames: exact with the new geometry
    got = maps.images()
    for i in range(3, 6):
        assert got["adf"][1, i - 3] == pytest.approx(reference(frames[i], moved)["adf"], rel=1e-5)
    assert np.isfinite(got["bf"]).all()


def test_rows_since_names_only_the_rows_that_changed() -> None:
    maps = LiveMaps((4, 3), (8, 8), Detectors((3.5, 3.5), 2.0, 3.0, 4.0))
    frames = np.ones((2, 8, 8), np.float32)
    v0, rows, _ = maps.rows_since(-1)
    assert rows.tolist() == [0, 1, 2, 3]
    maps.add(np.array([4, 5]), frames)  # row 1
    v1, rows, data = maps.rows_since(v0)
    assert rows.tolist() == [1] and data.shape == (6, 1, 3)
    assert np.isnan(data[0, 0, 0]) and data[0, 0, 1] > 0  # position 3 not filled
    assert maps.rows_since(v1)[1].size == 0


def test_no_binned_copy_when_it_would_not_fit() -> None:
    maps = LiveMaps((1000, 1000), (64, 64), Detectors((1, 1), 1, 2, 3), lowres_bytes=1 << 20)
    assert maps.lowres_shape is None
    assert maps.set_detectors(Detectors((2, 2), 1, 2, 3)) is False


def test_geometry_found_in_a_disk_pattern() -> None:
    yy, xx = np.mgrid[0:96, 0:96]
    pattern = np.where(np.hypot(xx - 40.0, yy - 50.0) <= 12, 100.0, 1.0)
    (cx, cy), r = find_disk(pattern)
    assert cx == pytest.approx(40, abs=0.2) and cy == pytest.approx(50, abs=0.2)
    assert r == pytest.approx(12, abs=0.5)
    det = resolve((96, 96), DetectorsRequest(adf_outer=40.0), None, pattern)
    assert det.adf_inner == pytest.approx(1.5 * r) and det.adf_outer == 40.0
    # the config's beam centre wins over the pattern; given values over both
    assert resolve((96, 96), DetectorsRequest(), (10.0, 20.0), pattern).center == (10.0, 20.0)
    given = DetectorsRequest(center=(5.0, 6.0))
    assert resolve((96, 96), given, (10.0, 20.0), pattern).center == (5.0, 6.0)
    assert find_disk(np.zeros((8, 8))) == (None, None)


@pytest.mark.parametrize(
    "body",
    [
        {"center": [200, 10]},
        {"center": [-1, 10]},
        {"bf_radius": 1e6},
    ],
)
def test_geometry_outside_the_frame_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        check_in_frame(DetectorsRequest.model_validate(body), (96, 96))


@pytest.mark.parametrize(
    "body",
    [
        {"adf_inner": 10, "adf_outer": 5},
        {"bf_radius": 0},
        {"bf_radius": float("nan")},
        {"center": [1.0]},
        {"colour": "red"},
    ],
)
def test_malformed_geometry_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DetectorsRequest.model_validate(body)
