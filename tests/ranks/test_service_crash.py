"""``kill -9`` of the service mid-scan: its ranks close their files, ``stemdaq relink`` makes
the master read them (real processes, real files)."""

from __future__ import annotations

import os
import signal
import subprocess

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle for reading)
from sim_cli import sim_cli

from .conftest import DATA, MASK, STEMDAQ, children_of, ranked_serve, wait_for, wait_gone


def test_ranks_outlive_a_killed_service_and_relink_repairs_the_master(tmp_path) -> None:
    with (
        sim_cli("--frame-shape", "64x64", "--frame-time", "0.015") as (rest, stream),
        ranked_serve(tmp_path / "data", 2, 1) as serve,
    ):
        children = children_of(serve.proc.pid)
        info = serve.arm(
            detector_url=rest,
            stream_endpoint=stream,
            scan_shape=[20, 8],
            file_template="crash.nxs",
            flush_seconds=0.1,
        )
        wait_for(
            lambda: serve.get(f"/acquisitions/{info['id']}")["frames_written"] >= 16,
            30,
            "frames written",
        )
        os.kill(serve.proc.pid, signal.SIGKILL)
        serve.proc.wait(10)
        # the ranks and the fan are told (SIGTERM at the parent's death): they abort, close
        assert not wait_gone(children, 30)
        data = serve.data_dir
        master = data / "crash.nxs.partial"
        ranks = sorted(p.name for p in data.glob("crash_r*.h5"))
        assert ranks == ["crash_r00.h5", "crash_r01.h5"]  # closed and renamed
        with h5py.File(master, "r", swmr=True) as f:  # still names the .partial files
            assert not f[MASK][()].any()

        result = subprocess.run(
            [*STEMDAQ, "relink", str(master)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "relinked" in result.stdout
        with h5py.File(master, "r") as f:
            written = f[MASK][()].astype(bool)
            frames = f[DATA][()]
            assert {s.file_name for s in f[DATA].virtual_sources()} == set(ranks)
            assert f[DATA.replace("intensity", "real")].id == f[DATA].id  # the hard link kept
        assert written.sum() >= 16
        assert frames[written].reshape(int(written.sum()), -1).any(axis=1).all()
        assert not frames[~written].any()
        per_rank = [written[r::2].sum() for r in range(2)]  # blocks of one row, 2 ranks
        assert all(n > 0 for n in per_rank), per_rank
