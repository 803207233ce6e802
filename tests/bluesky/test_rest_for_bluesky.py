"""The REST parts the bluesky device uses: path choice, long-poll wait, flush, bad input.

Against a real ``stemdaq serve`` and ``stemdaq sim`` (3 ms a frame)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import h5py
import hdf5plugin  # noqa: F401 - the bitshuffle/LZ4 filter of the dataset
import httpx
import numpy as np
import pytest
from stemdaq_client import Client, Conflict, InvalidRequest, NotFound, file_template_for

pytestmark = pytest.mark.slow

WRITTEN = "/entry/measurement/event1/image1/frames/written"


@pytest.fixture
def client(service: Any) -> Any:
    with Client(service.url, timeout=60) as c:
        yield c


def _arm(client: Any, **config: Any) -> Any:
    """Arm; a 409 while the service files the previous acquisition (final, slot not yet freed)
    is retried (bounded)."""
    for _ in range(600):
        try:
            return client.arm(**config)
        except Conflict:
            time.sleep(0.05)
    return client.arm(**config)


def _leading_rows(written: np.ndarray) -> int:
    complete = written.all(axis=1)
    return int(np.argmin(complete)) if not complete.all() else len(complete)


def test_caller_chooses_directory_and_file_name(client: Any, service: Any) -> None:
    acq = _arm(client, scan_shape=[2, 8], file_template=file_template_for("runs/b1", "x{1}.nxs"))
    expected = service.data_dir.resolve() / "runs" / "b1" / "x{1}.nxs"
    assert acq.file_path == str(expected)
    done = client.wait(acq.id, timeout=60)
    assert done.state.value == "completed"
    assert done.file_uri == expected.as_uri()
    assert done.writing is False and done.writing_file_uri is None
    assert done.rows_written == 2 and done.frames_written == 16
    assert done.frame_shape == [96, 96] and done.dtype == "uint16" and done.swmr is True
    assert expected.is_file()
    # never overwrite: the same name again is refused, the file is untouched
    before = expected.stat().st_mtime_ns
    with pytest.raises(InvalidRequest, match="exists already"):
        _arm(client, scan_shape=[2, 8], file_template=file_template_for("runs/b1", "x{1}.nxs"))
    assert expected.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "template",
    ["/tmp/escape.nxs", "../escape.nxs", "runs/../../escape.nxs", "outside/escape.nxs"],
)
def test_paths_outside_the_data_folder_are_refused(
    client: Any, service: Any, template: str, tmp_path: Path
) -> None:
    link = service.data_dir / "outside"
    if not link.exists():
        link.symlink_to(tmp_path, target_is_directory=True)  # a symlink escape
    total = client.list().total
    with pytest.raises(InvalidRequest):
        _arm(client, scan_shape=[2, 8], file_template=template)
    assert client.list().total == total  # nothing armed
    assert not (tmp_path / "escape.nxs").exists()


def test_wait_flush_and_rows_while_recording(client: Any) -> None:
    n_m, n_k = 64, 16  # ~3 s of frames: the flush (at the data thread's 2nd tick) comes first
    acq = _arm(client, scan_shape=[n_m, n_k], file_template=file_template_for("runs", "w.nxs"))
    rows_seen = []
    at = client.wait_written(acq.id, rows_written_ge=2, timeout=30)
    assert at.rows_written >= 2 or at.state.is_final
    rows_seen.append(at.rows_written)
    flush = client.flush(acq.id)
    assert flush.flushed is True
    info = flush.acquisition
    if info.writing:  # a SWMR reader now sees at least the rows the flush reported
        assert info.writing_file_uri is not None
        with h5py.File(urlparse(info.writing_file_uri).path, "r", swmr=True) as f:
            written = f[WRITTEN][()]
        assert _leading_rows(written) >= info.rows_written
    # the counts only grow; the wait returns when the acquisition ends, whatever is asked
    last = client.wait_written(acq.id, frames_written_ge=10**9, timeout=30)
    while not last.state.is_final:
        rows_seen.append(last.rows_written)
        last = client.wait_written(acq.id, frames_written_ge=10**9, timeout=30)
    rows_seen.append(last.rows_written)
    assert rows_seen == sorted(rows_seen)
    assert last.state.value == "completed"
    assert last.rows_written == n_m and last.frames_written == n_m * n_k
    # final: at once, flush has nothing to do
    assert client.wait_written(acq.id, rows_written_ge=n_m + 1, timeout=30).rows_written == n_m
    assert client.flush(acq.id).flushed is True
    with h5py.File(urlparse(last.file_uri).path, "r") as f:
        assert _leading_rows(f[WRITTEN][()]) == n_m


def test_wait_times_out_without_the_counts(client: Any) -> None:
    acq = _arm(client, scan_shape=[24, 16], file_template=file_template_for("runs", "t.nxs"))
    early = client.wait_written(acq.id, rows_written_ge=10**6, timeout=0.2)
    # back after the timeout, not at the end: the scan takes over a second of frames
    assert early.state.value in ("armed", "acquiring")
    assert early.rows_written < 24
    client.abort(acq.id)
    assert client.wait(acq.id, timeout=60).state.value == "aborted"


@pytest.mark.parametrize(
    "query",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": 1e9},
        {"timeout": math.nan},
        {"timeout": math.inf},
        {"timeout": "soon"},
        {"frames_written_ge": -1},
        {"frames_written_ge": 2**41},
        {"rows_written_ge": 1.5},
    ],
)
def test_wait_refuses_bad_queries(service: Any, client: Any, query: dict[str, Any]) -> None:
    (latest,) = client.list(limit=1).items
    r = httpx.get(f"{service.url}/api/v1/acquisitions/{latest.id}/wait", params=query)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_unknown_acquisition(client: Any) -> None:
    with pytest.raises(NotFound):
        client.wait_written("20000101-000000-9999", frames_written_ge=1, timeout=1)
    with pytest.raises(NotFound):
        client.flush("20000101-000000-9999")


def test_data_folder_has_no_stray_partials(service: Any) -> None:
    partials = [p for p in service.data_dir.rglob("*.partial") if not os.path.islink(p)]
    assert partials == []
