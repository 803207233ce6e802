"""The detector axes' calibration from each source, in the file: explicit config, the stream's
start message, the detector's SIMPLON config (read before arming), none."""

from __future__ import annotations

import math

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle filter
import numpy as np
import pytest
from stemdaq.models import AcquisitionState, Codec, Counters, DetectorInfo, SeriesStart
from stemdaq.writer import NexusWriter
from writer_helpers import DATA, config, frame_data, make_frame

SOURCES = "/entry/measurement/instrument/detector1/calibration_sources"


def wavelength_m(energy_ev: float) -> float:
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    ej = e * energy_ev
    return h / math.sqrt(2 * m0 * ej * (1 + ej / (2 * m0 * c * c)))


def _write(tmp_path, cfg, stream: DetectorInfo, simplon: DetectorInfo | None):
    w = NexusWriter(tmp_path / "cal.nxs", cfg)
    w.detector_config = simplon
    w.open(
        SeriesStart(series_id=1, protocol="stream2", detector=stream),
        endpoint="tcp://127.0.0.1:31001",
        channels=["threshold_1"],
        frame_shape=(12, 16),
        dtype="uint16",
        codec=Codec.BSLZ4,
    )
    for pos in range(cfg.n_positions):
        frame = make_frame(pos, frame_data(pos), Codec.BSLZ4)
        w.write(pos, 0, frame.payload, frame)
    return w.close(AcquisitionState.COMPLETED, Counters(), None)


@pytest.mark.parametrize(
    ("explicit", "stream", "simplon", "source", "length", "energy", "pixel"),
    [
        ({}, {}, {"detector_distance": 0.2, "incident_energy": 300e3, "pixel_size_x": 55e-6},
         "detector", 0.2, 300e3, 55e-6),
        ({}, {"detector_distance": 0.1, "incident_energy": 200e3, "pixel_size_x": 75e-6},
         {"detector_distance": 0.2, "incident_energy": 300e3, "pixel_size_x": 55e-6},
         "stream", 0.1, 200e3, 75e-6),
        ({"camera_length": 0.4, "beam_energy": 80e3, "pixel_size": 150e-6},
         {"detector_distance": 0.1, "incident_energy": 200e3, "pixel_size_x": 75e-6}, {},
         "config", 0.4, 80e3, 150e-6),
    ],
    ids=["simplon", "stream", "explicit"],
)  # fmt: skip
def test_each_source_gives_the_expected_scale_in_the_file(
    tmp_path, explicit, stream, simplon, source, length, energy, pixel
) -> None:
    cfg = config(calibration=explicit)
    path = _write(tmp_path, cfg, DetectorInfo(**stream), DetectorInfo(**simplon))
    with h5py.File(path) as f:
        ax = f[f"{DATA}/axis_i"]
        assert ax.attrs["units"] == "1/nm"
        expected = pixel / length / wavelength_m(energy) * 1e-9
        assert float(ax[1] - ax[0]) == pytest.approx(expected, rel=1e-9)
        src = f[SOURCES]
        assert src["camera_length"][()].decode() == source
        assert src["beam_energy"][()].decode() == source
        assert src["pixel_size"][()].decode() == source


def test_no_source_leaves_honest_pixel_indices(tmp_path) -> None:
    path = _write(tmp_path, config(), DetectorInfo(), None)
    with h5py.File(path) as f:
        ax = f[f"{DATA}/axis_i"]
        assert ax.attrs["units"] == "" and "uncalibrated" in ax.attrs["long_name"]
        np.testing.assert_array_equal(ax[:4], [0, 1, 2, 3])
        assert f[SOURCES]["reciprocal_pixel_size"][()].decode() == "none"
