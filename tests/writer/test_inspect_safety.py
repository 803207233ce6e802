"""``stemdaq inspect`` and ``probe_file`` on whole, gappy, crashed, damaged and hanging files.

Real files, real child processes: the command must never hang, never show a traceback, and its
exit code must say whether the data are whole (0), incomplete (1) or unreadable (2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the filters for reading
import numpy as np
import pytest
from stemdaq.models import AcquisitionState
from stemdaq.writer import probe as probe_mod
from stemdaq.writer.probe import first_meaningful_line, probe_file
from writer_helpers import BOOK, DATA, config, killed_writer_partial, write_scan

HERE = Path(__file__).parent
STEMDAQ = [sys.executable, "-m", "stemdaq.cli", "inspect"]
EVENT = "/entry/measurement/event1"


def inspect(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [*STEMDAQ, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream and 'File "' not in stream, stream


def test_complete_file_exits_0(tmp_path: Path) -> None:
    final, _ = write_scan(tmp_path / "ok.nxs", config())
    result = inspect(str(final))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: complete: all 12 frames written and verified" in result.stdout
    assert "in the chunk index: 12 of 12 written" in result.stdout
    js = json.loads(inspect(str(final), "--json", "--verify", "all").stdout)
    assert js["exit_code"] == 0 and js["ok"] is True and js["readable"] is True
    assert js["probe"]["images"][0]["frames_decoded"] == 12


def test_gaps_exit_1_with_the_reason_and_the_stored_warnings(tmp_path: Path) -> None:
    final, _ = write_scan(
        tmp_path / "gaps.nxs",
        config(),
        skip=(3, 7),
        state=AcquisitionState.COMPLETED_WITH_GAPS,
    )
    with h5py.File(final, "r+") as f:  # what the writer stores at close (warnings, error)
        acq = f[f"{EVENT}/acquisition"]
        if "warnings" in acq:
            del acq["warnings"]
        acq.create_dataset(
            "warnings", data=["no end-of-series message (end timeout)"], dtype=h5py.string_dtype()
        )
    result = inspect(str(final))
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = next(ln for ln in result.stdout.splitlines() if ln.startswith("verdict:"))
    assert "incomplete: state completed_with_gaps; 2 of 12 positions missing" in verdict
    assert "no end-of-series message" in result.stdout
    assert_no_traceback(result)


def test_state_completed_but_positions_missing_is_not_whole(tmp_path: Path) -> None:
    final, _ = write_scan(tmp_path / "c.nxs", config(), skip=(2,))  # older writers said so
    probe = probe_file(final, timeout=30, verify="index")
    assert probe.readable and probe.state == "completed"
    code, why = probe.verdict()
    assert code == 1 and "1 of 12 positions missing" in why


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9")
def test_killed_writer_partial_exits_1_with_the_frames(tmp_path: Path) -> None:
    partial = killed_writer_partial(tmp_path / "crash.nxs")
    t0 = time.monotonic()
    result = inspect(str(partial), "--timeout", "20")
    assert time.monotonic() - t0 < 25
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not closed (a .partial file" in result.stdout
    assert "10 of 20 positions missing" in result.stdout
    assert "opened: in SWMR mode only; a plain open says:" in result.stdout
    assert_no_traceback(result)
    js = json.loads(inspect(str(partial), "--json", "--verify", "all").stdout)
    (image,) = js["probe"]["images"]
    assert js["exit_code"] == 1 and js["partial"] is True
    assert image["frames_claimed"] == 10 and image["frames_verified"] == 10
    assert image["frames_decoded"] == 10 and image["unreadable"] == 0


def test_garbage_file_exits_2_without_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nxs"
    junk.write_bytes(os.urandom(4096))
    result = inspect(str(junk))
    assert result.returncode == 2
    assert "file signature not found" in result.stderr
    assert "verdict: unreadable" in result.stdout
    assert_no_traceback(result)


def test_truncated_file_exits_2_in_bounded_time(tmp_path: Path) -> None:
    final, _ = write_scan(tmp_path / "t.nxs", config())
    data = final.read_bytes()
    final.write_bytes(data[: len(data) // 2])
    t0 = time.monotonic()
    result = inspect(str(final), "--timeout", "4")
    assert time.monotonic() - t0 < 4 + 5
    assert result.returncode == 2, result.stdout + result.stderr
    assert "truncated file" in result.stdout  # the plain open's complaint is shown
    assert_no_traceback(result)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_a_file_that_never_answers_times_out(tmp_path: Path) -> None:
    fifo = tmp_path / "hang.nxs"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: it never does
    t0 = time.monotonic()
    result = inspect(str(fifo), "--timeout", "2")
    assert time.monotonic() - t0 < 2 + 5
    assert result.returncode == 2
    assert "HDF5 did not answer within 2 s while opening the file" in result.stderr
    assert_no_traceback(result)


def test_claimed_frames_without_a_chunk_or_that_do_not_decode(tmp_path: Path) -> None:
    final, _ = write_scan(tmp_path / "bad.nxs", config(), skip=(5,))
    with h5py.File(final, "r+") as f:
        mask = f[f"{BOOK}/written"]
        fixed = mask[()]
        fixed[1, 1] = 1  # claims position 5, which has no chunk
        mask[...] = fixed
        info = f[f"{DATA}/intensity"].id.get_chunk_info_by_coord((2, 3, 0, 0))
    with open(final, "r+b") as fh:  # damage the last frame's chunk behind its 12-byte header
        fh.seek(info.byte_offset + 12)
        fh.write(b"\xff" * (info.size - 12))
    index = probe_file(final, timeout=30, verify="index")
    assert index.images[0].frames_verified == 11 and index.images[0].unreadable_positions == [
        [1, 1]
    ]
    full = probe_file(final, timeout=30, verify="all")
    (image,) = full.images
    assert image.unreadable == 2 and image.unreadable_positions == [[1, 1], [2, 3]]
    assert image.frames_decoded == 10
    code, why = full.verdict()
    assert code == 1 and "2 of 12 written frames unreadable" in why


def test_80_columns_keep_every_nxdata_path_whole(tmp_path: Path) -> None:
    final, _ = write_scan(
        tmp_path / "a-rather-long-file-name-for-wrapping.nxs", config(), summary=True
    )
    js = json.loads(inspect(str(final), "--json").stdout)
    paths = [im["path"] for im in js["images"]]
    assert len(paths) == 8  # image_4d, image_sum, image_total, five live-view images
    result = inspect(str(final))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for path in paths:
        assert path in lines, path  # each NXdata heads its block, on one line
    for ln in lines:  # a longer line is a single word that must not be broken
        assert len(ln) <= 80 or " " not in ln.strip(), ln


def test_a_crashing_reader_is_reported_in_one_line(tmp_path: Path, monkeypatch) -> None:
    crash = (
        "import json, os, sys\n"
        "print(json.dumps({'doing': 'reading the chunk index of /x'}), flush=True)\n"
        "sys.stderr.write('HDF5-DIAG: Error detected in HDF5 (2.0.0):\\n'\n"
        "  '  #000: H5D.c line 1 in H5Dchunk_iter(): error iterating over chunks\\n'\n"
        "  '    major: Dataset\\n')\n"
        "sys.stderr.flush()\n"
        "os.abort()\n"
    )
    monkeypatch.setattr(probe_mod, "_CHILD", crash)
    result = probe_file(tmp_path / "any.nxs", timeout=30)
    assert not result.readable
    assert result.error == (
        "the reader process crashed (SIGABRT) while reading the chunk index of /x: "
        "error iterating over chunks"
    )


def test_first_meaningful_line_of_a_python_traceback() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "RuntimeError: Can't read data (inflate() failed)\n"
    )
    assert first_meaningful_line(text) == "RuntimeError: Can't read data (inflate() failed)"


def test_probe_reads_the_stored_error_and_state(tmp_path: Path) -> None:
    final, _ = write_scan(tmp_path / "f.nxs", config(), state=AcquisitionState.FAILED)
    with h5py.File(final, "r+") as f:
        f[f"{EVENT}/acquisition"].create_dataset("error", data="disk full")
    probe = probe_file(final, timeout=30, verify="sample")
    assert probe.readable and probe.state == "failed" and probe.stored_error == "disk full"
    assert probe.images[0].stored_bytes and probe.images[0].stored_bytes > 0
    assert np.all([im.verified_by == "sample" for im in probe.images])
    assert probe.verdict() == (1, "incomplete: state failed; error: disk full")


def test_probe_works_where_the_callers_folder_is_gone(tmp_path: Path, monkeypatch) -> None:
    """A reader child started from a deleted current folder still runs (python -P)."""
    final, _ = write_scan(tmp_path / "ok.nxs", config())
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    probe = probe_file(final, timeout=30)
    assert probe.readable and probe.state == "completed", probe.error
