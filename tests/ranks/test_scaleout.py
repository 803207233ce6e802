"""Three local ranks (``stemdaq serve --ranks 3``) against one: the same frames, one master file.

Real processes throughout: ``stemdaq sim``, ``stemdaq serve`` with its three ``stemdaq rank``
processes and its ``stemdaq fan``, HTTP between them, real HDF5 files. The one-rank reference is
today's :class:`~stemdaq.acquisition.Acquisition` against the same simulator.
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle for reading)
import httpx
import numpy as np
import pytest
from sim_cli import sim_cli
from stemdaq.acquisition import Acquisition
from stemdaq.config import AcquisitionConfig
from stemdaq.rank.ownership import Ownership

from .conftest import DATA, MASK, ranked_serve, wait_for

RANKS, BLOCK_ROWS = 3, 2


@pytest.fixture(scope="module")
def sim() -> tuple[str, str]:
    with sim_cli("--frame-shape", "64x64", "--seed", "7") as urls:
        yield urls


@pytest.fixture(scope="module")
def slow_sim() -> tuple[str, str]:
    """Paced: 15 ms a frame, so a reader and a kill -9 can act mid-scan."""
    with sim_cli("--frame-shape", "64x64", "--seed", "7", "--frame-time", "0.015") as urls:
        yield urls


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory):
    os.environ["STEMDAQ_FAN_SEND_TIMEOUT"] = "1"  # a killed rank is given up on after 1 s
    try:
        with ranked_serve(tmp_path_factory.mktemp("ranks") / "data", RANKS, BLOCK_ROWS) as s:
            yield s
    finally:
        del os.environ["STEMDAQ_FAN_SEND_TIMEOUT"]


def one_rank(urls: tuple[str, str], path: Path, **config: object) -> np.ndarray:
    """Today's single-process acquisition of the same series; its 4D data."""
    rest, stream = urls
    cfg = AcquisitionConfig(detector_url=rest, stream_endpoint=stream, **config)
    acq = Acquisition(cfg, path)
    acq.start()
    try:
        assert acq.wait(60)
    finally:
        acq.close()
    assert acq.state.value == "completed", acq.info().error
    with h5py.File(path, "r") as f:
        return f[DATA][()]


@pytest.mark.parametrize(
    ("scan", "serpentine"),
    [((7, 5), True), ((8, 3), False)],  # 7 rows: not a multiple of the block (2) nor of 3 x 2
    ids=["serpentine-7x5", "raster-8x3"],
)
def test_three_ranks_equal_one_rank(serve, sim, tmp_path, scan, serpentine) -> None:
    rest, stream = sim
    name = f"m{scan[0]}x{scan[1]}.nxs"
    info = serve.arm(
        detector_url=rest,
        stream_endpoint=stream,
        scan_shape=list(scan),
        serpentine=serpentine,
        file_template=name,
    )
    final = serve.wait_final(info["id"])
    assert final["state"] == "completed", final
    assert [r["state"] for r in final["ranks"]] == ["completed"] * RANKS
    n = scan[0] * scan[1]
    assert final["counters"]["frames_written"] == n == final["frames_expected"]
    owned = [Ownership(RANKS, r, BLOCK_ROWS, scan).owned_positions for r in range(RANKS)]
    assert [r["frames_written"] for r in final["ranks"]] == owned
    master = Path(final["file_path"])
    assert master == serve.data_dir / name
    assert not list(serve.data_dir.glob("*.partial"))
    assert not list(serve.data_dir.glob(f"{master.stem}_r*.eln_data.yaml"))  # the master's only
    with h5py.File(serve.data_dir / f"{master.stem}_r01.h5", "r") as f:  # counts its share only
        assert f["/entry/measurement/event1/image1/frames/frames_missing"][()] == 0

    reference = one_rank(sim, tmp_path / "one.nxs", scan_shape=scan, serpentine=serpentine)
    with h5py.File(master, "r") as f:
        data = f[DATA]
        assert data.is_virtual
        sources = {s.file_name for s in data.virtual_sources()}
        assert sources == {f"{master.stem}_r{r:02d}.h5" for r in range(RANKS)}
        np.testing.assert_array_equal(data[()], reference)  # bit for bit
        assert data[()].any()
        assert not f[MASK].is_virtual  # merged into the master at close
        assert f[MASK][()].all()
        assert f["/entry/measurement/event1/acquisition/state"][()] == b"completed"
        frame_id = f["/entry/measurement/event1/image1/frames/frame_id"][()]
        # the ranks' summed patterns and total-intensity images, added up
        event = f["/entry/measurement/event1"]
        included = event["image_sum/summary/frames_included"][()].astype(bool)
        pattern = event["image_sum/image_2d/intensity"][()]
        total = event["image_total/image_2d/intensity"][()]
        data64 = reference.astype(np.float64)
        np.testing.assert_allclose(pattern, data64[included].sum(axis=0))
        np.testing.assert_allclose(total[included], data64[included].sum(axis=(1, 2)))
        assert included.sum() >= RANKS  # every rank's share is in it
    ids = np.arange(n).reshape(scan)
    if serpentine:
        ids[1::2] = ids[1::2, ::-1]
    np.testing.assert_array_equal(frame_id, ids)


def test_libertem_and_hyperspy_read_the_master_as_one_dataset(serve, sim) -> None:
    Context = pytest.importorskip("libertem.api").Context  # noqa: N806
    from libertem.udf.sum import SumUDF

    rest, stream = sim
    info = serve.arm(
        detector_url=rest, stream_endpoint=stream, scan_shape=[5, 4], file_template="lt.nxs"
    )
    final = serve.wait_final(info["id"])
    assert final["state"] == "completed", final
    with h5py.File(final["file_path"], "r") as f:
        expected = f[DATA][()].astype(np.float64).sum(axis=(0, 1))
    ctx = Context.make_with("inline")
    ds = ctx.load("hdf5", path=final["file_path"], ds_path=DATA)
    assert tuple(ds.shape) == (5, 4, 64, 64)
    result = ctx.run_udf(dataset=ds, udf=SumUDF())
    np.testing.assert_allclose(result["intensity"].data, expected)
    rsciio_nexus = pytest.importorskip("rsciio.nexus")  # HyperSpy's reader
    signals = rsciio_nexus.file_reader(final["file_path"], use_default=True)
    assert signals[0]["data"].shape == (5, 4, 64, 64)
    np.testing.assert_allclose(np.asarray(signals[0]["data"]).sum(axis=(0, 1)), expected)


def test_swmr_reader_of_the_master_sees_frames_arrive(serve, slow_sim) -> None:
    rest, stream = slow_sim
    scan = (16, 8)
    info = serve.arm(
        detector_url=rest,
        stream_endpoint=stream,
        scan_shape=list(scan),
        file_template="live.nxs",
        flush_seconds=0.1,
    )
    partial = serve.data_dir / "live.nxs.partial"

    def opened() -> h5py.File | None:
        try:  # reserved empty first; made (SWMR started) once a rank knows the frames
            return h5py.File(partial, "r", swmr=True)
        except OSError:
            return None

    seen: list[int] = []
    with wait_for(opened, 30, "the master to be made") as f:
        mask = f[MASK]
        assert mask.is_virtual and f[DATA].is_virtual
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = serve.get(f"/acquisitions/{info['id']}")["state"]
            if state != "acquiring" and seen:
                break  # at close the rank files leave SWMR mode: reopen then, as for one file
            try:
                mask.refresh()
                seen.append(int(mask[()].sum()))
            except (OSError, RuntimeError):
                # the ranks close their files (leaving SWMR mode) up to one status poll (0.2 s)
                # before the service says so: an error is the close only if the state follows
                end = time.monotonic() + 3.0
                while serve.get(f"/acquisitions/{info['id']}")["state"] == "acquiring":
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.05)
                break
            if seen[-1] == scan[0] * scan[1]:
                break
            time.sleep(0.05)
    final = serve.wait_final(info["id"])
    assert final["state"] == "completed", final
    # while the ranks write, the count never shrinks (at their close they rename their files:
    # a reader still on the .partial master then sees fill values, and reopens <name>)
    growing = seen[: seen.index(max(seen)) + 1]
    assert growing == sorted(growing), seen
    assert len({n for n in growing if 0 < n < scan[0] * scan[1]}) >= 2, seen  # grows mid-scan


def test_an_existing_rank_file_refuses_the_scan_and_leaves_nothing_behind(serve, sim) -> None:
    rest, stream = sim
    existing = serve.data_dir / "taken_r01.h5"
    existing.write_bytes(b"someone else's data")
    r = httpx.post(
        f"{serve.url}/api/v1/acquisitions",
        json={
            "detector_url": rest,
            "stream_endpoint": stream,
            "scan_shape": [4, 4],
            "file_template": "taken.nxs",
        },
        timeout=60,
    )
    assert r.status_code in (409, 422), r.text
    assert "rank 1" in r.json()["detail"], r.text
    assert existing.read_bytes() == b"someone else's data"
    wait_for(lambda: not list(serve.data_dir.glob("taken*.partial")), 30, "reservations released")
    assert not (serve.data_dir / "taken.nxs").exists()
    # and the ranks are free for the next one
    info = serve.arm(
        detector_url=rest, stream_endpoint=stream, scan_shape=[3, 4], file_template="free.nxs"
    )
    assert serve.wait_final(info["id"])["state"] == "completed"


@pytest.mark.parametrize("action", ["stop", "abort"])
def test_stop_and_abort_reach_every_rank_and_the_next_scan_runs(serve, slow_sim, action) -> None:
    rest, stream = slow_sim
    info = serve.arm(
        detector_url=rest,
        stream_endpoint=stream,
        scan_shape=[16, 8],
        file_template=f"{action}.nxs",
        flush_seconds=0.1,
    )
    acq_id = info["id"]
    wait_for(
        lambda: serve.get(f"/acquisitions/{acq_id}")["frames_written"] > 0, 30, "frames written"
    )
    r = httpx.post(f"{serve.url}/api/v1/acquisitions/{acq_id}/{action}", timeout=30)
    assert r.status_code == 200, r.text
    final = serve.wait_final(acq_id)
    expected = "completed_with_gaps" if action == "stop" else "aborted"
    assert final["state"] == expected, final
    assert {x["state"] for x in final["ranks"]} <= {expected, "completed"}, final["ranks"]
    written = final["counters"]["frames_written"]
    assert 0 < written < 128
    with h5py.File(final["file_path"], "r") as f:
        assert int(f[MASK][()].sum()) == written
    # the fan and every rank take the next acquisition
    info = serve.arm(
        detector_url=rest, stream_endpoint=stream, scan_shape=[3, 4], file_template=f"{action}2.nxs"
    )
    assert serve.wait_final(info["id"])["state"] == "completed"


def test_kill_9_of_a_rank_leaves_gaps_in_its_blocks_only(serve, slow_sim) -> None:
    """Last in this module: the killed rank is not restarted."""
    rest, stream = slow_sim
    scan = (24, 8)  # ~3 s at 15 ms a frame: the kill comes while the victim has rows to go
    victim = 1
    info = serve.arm(
        detector_url=rest,
        stream_endpoint=stream,
        scan_shape=list(scan),
        file_template="killed.nxs",
        flush_seconds=0.1,
    )
    acq_id = info["id"]
    victim_file = serve.data_dir / f"killed_r{victim:02d}.h5.partial"

    def victim_flushed() -> bool:  # frames of the victim in its file's written mask
        try:
            with h5py.File(victim_file, "r", swmr=True) as f:
                return bool(f[MASK][()].any())
        except (OSError, KeyError):  # still the empty reservation, or being made
            return False

    wait_for(victim_flushed, 30, f"rank {victim} to flush frames")
    metrics = httpx.get(f"{serve.url}/metrics", timeout=10).text  # per rank, while it runs
    assert f'stemdaq_rank_up{{rank="{victim}"}} 1.0' in metrics, metrics
    assert f'stemdaq_rank_frames_written{{rank="{victim}"}}' in metrics
    rank_url = serve.get(f"/acquisitions/{acq_id}")["ranks"][victim]["url"]
    pid = httpx.get(f"{rank_url}/rank", timeout=10).json()["pid"]
    os.kill(pid, signal.SIGKILL)

    final = serve.wait_final(acq_id, timeout=90)
    assert final["state"] == "failed"
    assert f"rank {victim}" in final["error"] and "SIGKILL" in final["error"], final["error"]
    states = [r["state"] for r in final["ranks"]]
    assert states[victim] == "lost" and states.count("completed") == RANKS - 1, states
    status = serve.get("/status")
    assert "rank 1" in str(status), status

    master = Path(final["file_path"])
    with h5py.File(master, "r") as f:  # the master opens; the dead rank's file keeps .partial
        written = f[MASK][()].astype(bool)
        data = f[DATA]
        sources = {s.file_name for s in data.virtual_sources()}
        assert f"{master.stem}_r{victim:02d}.h5.partial" in sources
        victim_rows = Ownership(RANKS, victim, BLOCK_ROWS, scan).row_mask()
        assert written[~victim_rows].all()  # the other ranks' blocks are whole
        assert not written[victim_rows].all()  # gaps: only in the killed rank's blocks
        assert written[victim_rows].any()  # what it flushed before dying is kept
        assert final["counters"]["frames_written"] == int(written.sum())
        first = np.argwhere(written[victim_rows])[0]
        row = np.flatnonzero(victim_rows)[first[0]]
        assert data[row, first[1]].any()  # a frame the mask claims reads back

    # the live view keeps what it fetched from the dead rank: its missing rows stay unfilled
    live = serve.get("/live")
    assert live["acquisition_id"] == acq_id and live["finished"], live
    filled = np.isfinite(np.load(io.BytesIO(httpx.get(f"{serve.url}/api/v1/live/bf.npy").content)))
    assert filled[~victim_rows].any() and not filled[victim_rows].all()
    assert live["filled"] == int(filled.sum())
