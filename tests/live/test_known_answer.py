"""A simulated scan with a known answer, through a real ``stemdaq sim`` process and a real
acquisition: the centre-of-mass map reproduces the disk's known deflection, the ADF map the
annulus' counts, every position is filled (the stored overview is no longer speckled), and
the file holds the same maps as NXimage image_2d groups."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from conftest import GEOMETRY, SCAN, Sim, expected_shift, reference_maps
from stemdaq.acquisition import Acquisition
from stemdaq.config import AcquisitionConfig
from stemdaq.models import AcquisitionState
from stemdaq.writer.inspect import inspect_file

EVENT = "/entry/measurement/event1"


def test_com_and_adf_maps_reproduce_the_known_answer(deflecting_sim: Sim, tmp_path: Path) -> None:
    cfg = AcquisitionConfig.model_validate(deflecting_sim.live_config())
    acq = Acquisition(cfg, tmp_path / "known.nxs", acq_id="known")
    acq.start()
    try:
        assert acq.wait(60), "the acquisition did not end"
    finally:
        acq.close()
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED, info.error
    engine = acq.summary
    assert engine is not None and engine.maps.filled().all(), "every position in the maps"
    maps = engine.maps.images()

    gen = deflecting_sim.generator()
    ref = reference_maps(gen, GEOMETRY)
    np.testing.assert_allclose(maps["adf"], ref["adf"], rtol=1e-5)
    np.testing.assert_allclose(maps["bf"], ref["bf"], rtol=1e-5)
    np.testing.assert_allclose(maps["com_x"], ref["com_x"], rtol=1e-4, atol=1e-4)
    # the known deflection, up to counting noise (~0.1 pixel) and the diffuse halo's pull
    shift_x, shift_y = expected_shift(gen)
    for got, want in ((maps["com_x"], shift_x), (maps["com_y"], shift_y)):
        err = np.abs(got - want)
        assert err.mean() < 0.1 and err.max() < 0.5, (err.mean(), err.max())
    slope_x = np.polyfit(np.arange(SCAN[1]), maps["com_x"].mean(axis=0), 1)[0]
    slope_y = np.polyfit(np.arange(SCAN[0]), maps["com_y"].mean(axis=1), 1)[0]
    assert abs(slope_x - 0.2) < 0.01 and abs(slope_y + 0.15) < 0.01, (slope_x, slope_y)

    with h5py.File(info.file_path, "r") as f:
        ev = f[EVENT]
        for name in ("adf", "com_x"):
            data = ev[f"image_{name}/image_2d"]
            np.testing.assert_array_equal(data["intensity"][()], maps[name])
            np.testing.assert_array_equal(data["axis_i"][()], ev["image1/image_4d/axis_k"][()])
            np.testing.assert_array_equal(data["axis_j"][()], ev["image1/image_4d/axis_m"][()])
            assert data["axis_i"].attrs["units"] == "nm"
            live = ev[f"image_{name}/live"]
            assert live["frames_included"][()].all() and bool(live["complete"][()])
            assert live["adf_inner"][()] == GEOMETRY.adf_inner
        assert ev["image_total/summary/frames_included"][()].all(), "no speckled overview"
        assert not (ev["image_total/image_2d/intensity"][()] == 0).any()
    listed = inspect_file(Path(info.file_path))
    assert {"image_bf", "image_adf", "image_com_x", "image_com_y"} <= set(listed.live_images)
