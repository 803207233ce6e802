"""The NXimage API (every form, every signal kind, shape checks) and the axis unit categories."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from stemdaq.config import Calibration
from stemdaq.errors import ShapeError
from stemdaq.models import DetectorInfo
from stemdaq.writer import Axis, electron_wavelength, write_nximage
from stemdaq.writer.axes import detector_axes, resolve_geometry, scan_axes
from stemdaq.writer.layout import FORMS
from writer_helpers import DATA, config, start, write_scan

SIZES = {"indices_image": 3, "axis_m": 2, "axis_k": 4, "axis_j": 5, "axis_i": 6}


def _axes(form):
    return {
        n: Axis(np.arange(SIZES[n], dtype=float), "nm", f"{n} position")
        for n in FORMS[form]
        if n != "indices_image"
    }


def _shape(form):
    return tuple(SIZES[n] for n in FORMS[form])


def _objects(path):
    names: list[str] = []
    with h5py.File(path, "r") as f:
        f.visit(names.append)
    return names


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_with_every_signal_kind(tmp_path, form):
    shape = _shape(form)
    rng = np.random.default_rng(0)
    real = rng.random(shape)
    imag = rng.random(shape)
    kwargs = (
        {"indices_image": np.arange(10, 13), "indices_group": [0, 4, 4]}
        if form.startswith("stack")
        else {}
    )
    with h5py.File(tmp_path / "f.h5", "w") as f:
        write_nximage(
            f,
            "image1",
            form,
            axes=_axes(form),
            intensity=np.abs(real + 1j * imag),
            real=real,
            imag=imag,
            complex=real + 1j * imag,
            title=form,
            **kwargs,
        )
    with h5py.File(tmp_path / "f.h5", "r") as f:
        g = f[f"image1/{form}"]
        assert f["image1"].attrs["NX_class"] == "NXimage" and g.attrs["NX_class"] == "NXdata"
        assert g.attrs["signal"] == "intensity"
        assert list(g.attrs["axes"]) == list(FORMS[form])
        for dim, name in enumerate(FORMS[form]):
            assert g.attrs[f"{name}_indices"] == dim
            assert g[name].shape == (shape[dim],)
            assert "units" in g[name].attrs and "long_name" in g[name].attrs
        assert g["complex"].dtype.kind == "c"
        np.testing.assert_array_equal(g["complex"][()], real + 1j * imag)
        np.testing.assert_array_equal(g["imag"][()], imag)
        for name in ("intensity", "real", "imag", "complex"):
            assert "units" in g[name].attrs and "long_name" in g[name].attrs
        if form.startswith("stack"):
            assert g["indices_image"][()].tolist() == [10, 11, 12]
            assert g["indices_group"][()].tolist() == [0, 4, 4]


def test_intensity_alone_gets_real_as_hard_link(tmp_path):
    with h5py.File(tmp_path / "l.h5", "w") as f:
        write_nximage(f, "image1", "image_2d", axes=_axes("image_2d"), intensity=np.ones((5, 6)))
        assert f["image1/image_2d/real"].id == f["image1/image_2d/intensity"].id


BAD = [
    ("image_2d", {"intensity": np.ones((5, 7))}, "axis_i has 6 values"),
    ("image_2d", {"intensity": np.ones((5,))}, "rank 2"),
    ("image_3d", {"intensity": np.ones((4, 5, 6)), "real": np.ones((4, 5, 7))}, "other signals"),
    ("image_1d", {"complex": np.ones(6)}, "complex dtype"),
    ("image_1d", {"real": np.ones(6, dtype=complex)}, "real numbers"),
    ("stack_1d", {"intensity": np.ones((3, 6)), "indices_image": [0, 2, 3]}, "steps of one"),
    ("stack_1d", {"intensity": np.ones((3, 6)), "indices_image": [0, 1]}, "n_img = 3"),
    ("stack_2d", {"intensity": np.ones((3, 5, 6)), "indices_group": [1, 2]}, "indices_group"),
    ("image_2d", {"intensity": np.ones((5, 6)), "indices_image": [0]}, "not a stack"),
    ("image_5d", {"intensity": np.ones(6)}, "unknown NXimage form"),
    ("image_1d", {}, "at least one"),
]


@pytest.mark.parametrize(("form", "kwargs", "message"), BAD)
def test_wrong_shapes_raise_before_anything_is_written(tmp_path, form, kwargs, message):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_group("keep")
    before = _objects(path)
    with h5py.File(path, "a") as f, pytest.raises(ShapeError, match=message):
        write_nximage(f, "image1", form, axes=_axes(form) if form in FORMS else {}, **kwargs)
    assert _objects(path) == before


def test_missing_axis_raises(tmp_path):
    with h5py.File(tmp_path / "m.h5", "w") as f, pytest.raises(ShapeError, match="axis_j"):
        write_nximage(
            f,
            "image1",
            "image_2d",
            axes={"axis_i": Axis(np.arange(6), "nm", "x")},
            intensity=np.ones((5, 6)),
        )
        assert "image1" not in f


def test_relativistic_wavelength():
    assert electron_wavelength(200e3) == pytest.approx(2.508e-12, abs=5e-16)
    assert electron_wavelength(300e3) == pytest.approx(1.969e-12, abs=5e-16)
    assert electron_wavelength(80e3) == pytest.approx(4.176e-12, abs=5e-16)


@pytest.mark.parametrize("unit", ["m", "um", "nm", "angstrom"])
def test_scan_axes_nx_length(tmp_path, unit):
    cfg = config(scan_unit=unit, scan_step=(0.5, 2.0), scan_origin=(1.0, -3.0))
    final, _ = write_scan(tmp_path / f"{unit}.nxs", cfg)
    with h5py.File(final, "r") as f:
        m, k = f[f"{DATA}/axis_m"], f[f"{DATA}/axis_k"]
        assert m.attrs["units"] == unit and k.attrs["units"] == unit
        np.testing.assert_allclose(m[()], [1.0, 1.5, 2.0])
        np.testing.assert_allclose(k[()], [-3.0, -1.0, 1.0, 3.0])


def test_detector_axes_wavenumber_from_calibration(tmp_path):
    cal = Calibration(
        pixel_size=55e-6, camera_length=0.2, beam_energy=200e3, beam_center=(8.0, 6.0)
    )
    final, _ = write_scan(tmp_path / "k.nxs", config(calibration=cal))
    step = 55e-6 / 0.2 / 2.5079e-12 * 1e-9  # 1/nm per pixel
    with h5py.File(final, "r") as f:
        i, j = f[f"{DATA}/axis_i"], f[f"{DATA}/axis_j"]
        assert i.attrs["units"] == j.attrs["units"] == "1/nm"
        assert i[8] == 0.0 and j[6] == 0.0
        assert i[1] - i[0] == pytest.approx(step, rel=1e-4)
        assert "1/nm" in i.attrs["long_name"]
        det = f["/entry/measurement/instrument/detector1"]
        assert det["distance"][()] == 0.2
        assert f["/entry/measurement/instrument/ebeam_column/electron_source/voltage"][()] == 200e3


def test_reciprocal_pixel_size_overrides_geometry():
    cal = Calibration(
        reciprocal_pixel_size=0.05, pixel_size=55e-6, camera_length=0.2, beam_energy=2e5
    )
    geo = resolve_geometry(config(calibration=cal), DetectorInfo(), (4, 4))
    axes = detector_axes(geo, (4, 4))
    np.testing.assert_allclose(axes["axis_i"].values, [-0.075, -0.025, 0.025, 0.075])


def test_calibration_falls_back_to_the_stream():
    det = DetectorInfo(
        pixel_size_x=75e-6,
        detector_distance=0.1,
        incident_energy=300e3,
        beam_center_x=2.0,
        beam_center_y=1.0,
    )
    geo = resolve_geometry(config(), det, (4, 5))
    assert geo.calibrated and geo.beam_center == (2.0, 1.0)
    assert geo.reciprocal_pixel_size == pytest.approx(
        75e-6 / 0.1 / electron_wavelength(300e3) * 1e-9
    )


def test_uncalibrated_axes_are_pixel_indices(tmp_path):
    w_start = start(pixel_size_x=None, pixel_size_y=None)
    geo = resolve_geometry(config(), w_start.detector, (12, 16))
    assert not geo.calibrated
    final, _ = write_scan(tmp_path / "u.nxs", config())  # start() has no energy/camera length
    with h5py.File(final, "r") as f:
        i = f[f"{DATA}/axis_i"]
        assert i.attrs["units"] == ""  # NX_UNITLESS
        assert "pixel index (uncalibrated)" in i.attrs["long_name"]
        np.testing.assert_array_equal(i[()], np.arange(16))


def test_scan_axes_helper_matches_config():
    axes = scan_axes(config(scan_shape=(2, 3), scan_step=(1.0, 0.1), scan_unit="angstrom"))
    assert axes["axis_k"].units == "angstrom"
    np.testing.assert_allclose(axes["axis_k"].values, [0.0, 0.1, 0.2])


def test_nonpositive_stream_energy_means_uncalibrated_not_an_error():
    from stemdaq.config import AcquisitionConfig
    from stemdaq.models import DetectorInfo
    from stemdaq.writer.axes import resolve_geometry

    geo = resolve_geometry(
        AcquisitionConfig(),
        DetectorInfo(incident_energy=0.0, pixel_size_x=-1.0, detector_distance=0.1),
        (8, 8),
    )
    assert not geo.calibrated and geo.beam_energy is None and geo.pixel_size is None
