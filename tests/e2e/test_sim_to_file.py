"""sim -> ZeroMQ on 127.0.0.1 -> receiver -> NeXus file: every frame bit for bit.

Real parts only: the simulated detector's REST server and PUSH socket, stemdaq's Acquisition
(receiver thread, writer thread, compression pool) and a real HDF5 file read back with h5py.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the filters for reading)
import numpy as np
import pytest
from stemdaq.acquisition import Acquisition
from stemdaq.config import AcquisitionConfig
from stemdaq.models import AcquisitionState

from .conftest import running

DATA = "/entry/measurement/event1/image1/image_4d/intensity"
SCAN = (4, 5)


def record(
    sim,
    tmp_path: Path,
    *,
    name: str = "scan.nxs",
    scan=SCAN,
    active: bool = False,
    faults_expected_end: bool = True,
    **config,
) -> Acquisition:
    """Run one acquisition against ``sim`` (passive unless ``active``) and return it closed."""
    cfg = AcquisitionConfig(
        stream_endpoint=sim.stream_endpoint,
        detector_url=sim.rest_url if active else None,
        scan_shape=scan,
        start_timeout=20,
        end_timeout=config.pop("end_timeout", 3.0),
        flush_frames=8,
        **config,
    )
    acq = Acquisition(cfg, tmp_path / name, acq_id=name)
    with running(acq):
        if not active:
            sim.run_series(scan[0] * scan[1], wait=False)
        assert acq.wait(60), "acquisition did not finish"
    return acq


def read_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        data = f[DATA][()]
        written = f[_bookkeeping(f, "written")][()]
    return data, written


def _bookkeeping(f: h5py.File, name: str) -> str:
    found: list[str] = []

    def visit(path: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and path.endswith("/" + name) and "image1" in path:
            found.append(path)

    f.visititems(visit)
    assert found, f"no per-position dataset {name!r} in the file"
    return found[0]


def expected_frame(sim, image_id: int) -> np.ndarray:
    return sim.generator.frame(image_id)


@pytest.mark.parametrize("fmt", ["cbor", "json"])
@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_every_frame_bit_exact(make_sim, tmp_path, fmt, compression, dtype):
    sim = make_sim(fmt=fmt, compression=compression, dtype=dtype, frame_shape=(96, 96), seed=3)
    acq = record(sim, tmp_path)
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED, info.error
    assert info.frames_written == 20 and info.frames_dropped == 0
    data, written = read_frames(Path(info.file_path))
    assert data.dtype == np.dtype(dtype)
    assert written.all()
    for i in range(20):
        np.testing.assert_array_equal(
            data[i // 5, i % 5], expected_frame(sim, i), err_msg=f"frame {i}"
        )


def test_active_mode_configures_arms_and_triggers(make_sim, tmp_path):
    sim = make_sim(fmt="cbor", compression="bslz4", dtype="uint16")
    acq = record(sim, tmp_path, active=True, scan=(3, 4))
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED, info.error
    assert info.frames_written == 12
    data, _ = read_frames(Path(info.file_path))
    np.testing.assert_array_equal(data[2, 3], expected_frame(sim, 11))


def test_serpentine_places_odd_rows_backwards(make_sim, tmp_path):
    sim = make_sim()
    acq = record(sim, tmp_path, serpentine=True)
    data, _ = read_frames(Path(acq.info().file_path))
    np.testing.assert_array_equal(data[0, 0], expected_frame(sim, 0))
    np.testing.assert_array_equal(data[1, 4], expected_frame(sim, 5))  # row 1 runs backwards
    np.testing.assert_array_equal(data[1, 0], expected_frame(sim, 9))


def test_file_is_renamed_on_close_and_partial_is_gone(make_sim, tmp_path):
    sim = make_sim()
    acq = record(sim, tmp_path)
    final = Path(acq.info().file_path)
    assert final.exists()
    assert not final.with_name(final.name + ".partial").exists()


def test_two_channels_go_to_their_own_nximage(make_sim, tmp_path):
    sim = make_sim(channels=("threshold_1", "threshold_2"), seed=5)
    acq = record(sim, tmp_path)
    info = acq.info()
    assert info.state is AcquisitionState.COMPLETED, info.error
    assert info.channels == ["threshold_1", "threshold_2"]
    assert info.frames_expected == 2 * 20 and info.frames_written == 40
    with h5py.File(info.file_path, "r") as f:
        for ci, group in enumerate(("image1", "image2")):
            data = f[f"/entry/measurement/event1/{group}/image_4d/intensity"]
            for i in (0, 7, 19):
                np.testing.assert_array_equal(
                    data[i // 5, i % 5], sim.generator.frame(i, channel=ci)
                )


def test_only_the_configured_channel_is_recorded(make_sim, tmp_path):
    sim = make_sim(channels=("threshold_1", "threshold_2"), seed=5)
    acq = record(sim, tmp_path, channel="threshold_2")
    info = acq.info()
    assert info.channels == ["threshold_2"] and info.frames_written == 20
    assert info.frames_dropped == 0 and info.counters.messages_ignored == 20
    data, _ = read_frames(Path(info.file_path))
    np.testing.assert_array_equal(data[1, 2], sim.generator.frame(7, channel=1))
