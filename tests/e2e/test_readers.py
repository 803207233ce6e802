"""Calibrated axes as the microscopist's tools read them: h5py, RosettaSciIO, nexusformat.

Files come from the real simulator over loopback ZeroMQ; the expected reciprocal-space scale is
computed independently here (relativistic wavelength, small-angle q = theta / lambda).
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle filter
import numpy as np
import pytest
from stemdaq.models import DetectorInfo

from .test_sim_to_file import record

IMAGE = "/entry/measurement/event1/image1/image_4d"
SOURCES = "/entry/measurement/instrument/detector1/calibration_sources"


def wavelength_m(energy_ev: float) -> float:
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    ej = e * energy_ev
    return h / math.sqrt(2 * m0 * ej * (1 + ej / (2 * m0 * c * c)))


def expected_scale(pixel: float, length: float, energy: float) -> float:
    return pixel / length / wavelength_m(energy) * 1e-9  # 1/nm per pixel


def _sources(f: h5py.File) -> dict[str, str]:
    return {k: f[SOURCES][k][()].decode() for k in f[SOURCES]}


@pytest.mark.parametrize("fmt", ["cbor", "json"])  # v2 start message; v1 header (config part)
def test_detector_axes_calibrated_from_the_stream(make_sim, tmp_path: Path, fmt: str) -> None:
    sim = make_sim(fmt=fmt)
    sim.configure(detector_distance=0.25, incident_energy=200_000.0)
    acq = record(sim, tmp_path, scan_step=(2.0, 2.0), scan_unit="nm")
    with h5py.File(acq.info().file_path) as f:
        ax = f[f"{IMAGE}/axis_i"]
        assert ax.attrs["units"] == "1/nm"
        scale = float(ax[1] - ax[0])
        assert scale == pytest.approx(expected_scale(75e-6, 0.25, 200_000.0), rel=1e-9)
        assert f[f"{IMAGE}/axis_m"].attrs["units"] == "nm"
        src = _sources(f)
    assert src["camera_length"] == "stream" and src["beam_energy"] == "stream"
    assert src["reciprocal_pixel_size"].startswith("derived")


def test_explicit_calibration_overrides_the_detector(make_sim, tmp_path: Path) -> None:
    sim = make_sim()
    sim.configure(detector_distance=0.25, incident_energy=200_000.0)
    acq = record(sim, tmp_path, calibration={"camera_length": 0.5})
    with h5py.File(acq.info().file_path) as f:
        ax = f[f"{IMAGE}/axis_i"]
        assert float(ax[1] - ax[0]) == pytest.approx(
            expected_scale(75e-6, 0.5, 200_000.0), rel=1e-9
        )
        assert _sources(f)["camera_length"] == "config"


def test_uncalibrated_stays_honest(make_sim, tmp_path: Path) -> None:
    sim = make_sim()
    sim.configure(detector_distance=0.0)  # the detector does not know its distance
    acq = record(sim, tmp_path)
    with h5py.File(acq.info().file_path) as f:
        ax = f[f"{IMAGE}/axis_i"]
        assert ax.attrs["units"] == ""  # NX_UNITLESS
        assert "uncalibrated" in ax.attrs["long_name"]
        np.testing.assert_array_equal(ax[:3], [0.0, 1.0, 2.0])
        assert _sources(f)["camera_length"] == "none"


def test_simplon_config_is_the_last_resort() -> None:
    from stemdaq.config import AcquisitionConfig
    from stemdaq.writer.axes import resolve_geometry

    simplon = DetectorInfo(detector_distance=0.2, incident_energy=300_000.0, pixel_size_x=55e-6)
    geo = resolve_geometry(AcquisitionConfig(), DetectorInfo(), (64, 64), simplon)
    assert geo.reciprocal_pixel_size == pytest.approx(expected_scale(55e-6, 0.2, 300_000.0))
    assert dict(geo.sources)["camera_length"] == "detector"
    stream = DetectorInfo(detector_distance=0.1)
    geo = resolve_geometry(AcquisitionConfig(), stream, (64, 64), simplon)
    assert geo.camera_length == 0.1 and dict(geo.sources)["camera_length"] == "stream"


def test_rosettasciio_reads_a_4d_signal_with_scan_and_detector_axes(
    make_sim, tmp_path: Path
) -> None:
    rsciio_nexus = pytest.importorskip("rsciio.nexus")
    sim = make_sim()
    sim.configure(detector_distance=0.25, incident_energy=200_000.0)
    acq = record(sim, tmp_path, scan=(3, 4), scan_step=(2.0, 5.0), scan_unit="nm")
    signals = rsciio_nexus.file_reader(acq.info().file_path, use_default=True)
    data = [s for s in signals if np.ndim(s["data"]) == 4]
    assert len(data) == 1, [np.shape(s["data"]) for s in signals]
    axes = {a["name"]: a for a in data[0]["axes"]}
    assert [axes[n]["units"] for n in ("axis_m", "axis_k", "axis_j", "axis_i")] == [
        "nm",
        "nm",
        "1/nm",
        "1/nm",
    ]
    assert axes["axis_k"]["scale"] == pytest.approx(5.0)
    assert axes["axis_i"]["scale"] == pytest.approx(expected_scale(75e-6, 0.25, 200_000.0))
    # (RosettaSciIO marks all four as navigation axes: it reads @interpretation from the NXdata
    # group, which NXem does not document, so stemdaq keeps the file valid instead; HyperSpy users
    # call s.transpose(signal_axes=2), see README)
    np.testing.assert_array_equal(np.asarray(data[0]["data"])[1, 2], sim.generator.frame(6))


def test_nexusformat_plots_the_calibrated_4d_data(make_sim, tmp_path: Path) -> None:
    nexus = pytest.importorskip("nexusformat.nexus")
    sim = make_sim()
    sim.configure(detector_distance=0.25, incident_energy=200_000.0)
    acq = record(sim, tmp_path)
    root = nexus.nxload(acq.info().file_path)
    plottable = root.plottable_data
    assert plottable.nxsignal.shape[-2:] == tuple(sim.generator.frame(0).shape)
    units = [str(ax.attrs.get("units", "")) for ax in plottable.nxaxes]
    assert units == ["nm", "nm", "1/nm", "1/nm"]
