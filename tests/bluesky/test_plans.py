"""A real RunEngine drives a real ``stemdaq serve`` + ``stemdaq sim`` through StemdaqDetector."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import h5py
import hdf5plugin  # noqa: F401 - the bitshuffle/LZ4 filter of the dataset
import numpy as np
import pytest

pytestmark = pytest.mark.slow

bp = pytest.importorskip("bluesky.plans")
event_model = pytest.importorskip("event_model")


class Documents:
    """Every document of a run, validated with event-model as it arrives."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        self.docs.append((name, doc))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [doc for n, doc in self.docs if n == name]


def _path(uri: str) -> Path:
    return Path(urlparse(uri).path)


def _covered(datums: list[dict[str, Any]], resource_uid: str) -> list[int]:
    """Every event index the StreamDatum documents of one resource cover, in order."""
    out: list[int] = []
    for d in datums:
        if d["stream_resource"] == resource_uid:
            out.extend(range(d["indices"]["start"], d["indices"]["stop"]))
    return out


def _consolidated(docs: Documents, resource: dict[str, Any]) -> np.ndarray:
    """The data as Tiled reads them: bluesky's HDF5Consolidator over the documents gives the
    data source (file, dataset, shape, chunks, dtype). Tiled's own HDF5 adapter is used when it
    imports (it needs tiled's server parts); else the data source is read with h5py, as it does.
    """
    from bluesky.consolidators import HDF5Consolidator

    descriptor = next(d for d in docs.of("descriptor") if resource["data_key"] in d["data_keys"])
    consolidator = HDF5Consolidator(resource, descriptor)
    for datum in docs.of("stream_datum"):
        if datum["stream_resource"] == resource["uid"]:
            consolidator.consume_stream_datum(datum)
    source = consolidator.get_data_source()
    structure = source.structure
    try:
        adapter = consolidator.get_adapter()
    except ImportError:  # tiled without its server extras (sqlalchemy)
        adapter = None
    if adapter is not None:
        return np.asarray(adapter.read())
    (asset,) = source.assets
    with h5py.File(_path(asset.data_uri), "r", swmr=source.parameters["swmr"]) as f:
        dset = f[source.parameters["dataset"]]
        assert dset.chunks == tuple(c[0] for c in structure.chunks)
        assert dset.dtype == structure.data_type.to_numpy_dtype()
        assert dset.shape[1:] == structure.shape[1:]
        return dset[: structure.shape[0]]


def test_fly_scan_one_event_per_row(
    make_detector: Any, run_engine: Any, service: Any, expected_frames: Any
) -> None:
    from stemdaq_client import Client
    from stemdaq_client.ophyd import fly_rows

    n_m, n_k = 8, 16
    det = make_detector((n_m, n_k))
    docs = Documents()
    run_engine(fly_rows(det, n_m), docs)

    (start,) = docs.of("start")
    (stop,) = docs.of("stop")
    assert stop["exit_status"] == "success"
    (resource,) = docs.of("stream_resource")
    assert resource["mimetype"] == "application/x-hdf5"
    params = resource["parameters"]
    assert params["swmr"] is True
    assert params["dataset"] == "/entry/measurement/event1/image1/image_4d/intensity"
    (descriptor,) = docs.of("descriptor")
    key = descriptor["data_keys"]["stemdaq"]
    assert key["shape"] == [1, n_k, 96, 96]
    assert key["dtype_numpy"] == "<u2"
    assert key["external"] == "STREAM:"
    config = descriptor["configuration"]["stemdaq"]["data"]
    acq_id = config["stemdaq-acquisition_id"]
    assert config["stemdaq-scan_columns"] == n_k

    # every row exactly once, in order, one event per row
    assert _covered(docs.of("stream_datum"), resource["uid"]) == list(range(n_m))

    with Client(service.url) as client:
        acq = client.get(acq_id)
    assert acq.state.value == "completed"
    assert acq.rows_written == n_m
    assert params["chunk_shape"] == acq.chunk_shape
    assert resource["uri"] == acq.file_uri
    assert _path(resource["uri"]).parent == service.data_dir.resolve() / "bluesky"

    expected = expected_frames(n_m, n_k)
    with h5py.File(_path(resource["uri"]), "r") as f:
        np.testing.assert_array_equal(f[params["dataset"]][()], expected)
    np.testing.assert_array_equal(_consolidated(docs, resource), expected)
    assert start["scan_rows"] == n_m
    from bluesky.run_engine import call_in_bluesky_event_loop

    # a signal read from the REST API at each get
    assert call_in_bluesky_event_loop(det.service_state.get_value()) == "idle"


def test_count_one_event_per_acquisition(
    make_detector: Any, run_engine: Any, service: Any, expected_frames: Any
) -> None:
    n_m, n_k = 4, 16
    det = make_detector((n_m, n_k))
    docs = Documents()
    run_engine(bp.count([det], num=2), docs)

    assert docs.of("stop")[0]["exit_status"] == "success"
    resources = docs.of("stream_resource")
    assert len(resources) == 2  # one file per trigger
    assert resources[0]["uri"] != resources[1]["uri"]
    (descriptor,) = docs.of("descriptor")
    assert descriptor["data_keys"]["stemdaq"]["shape"] == [n_m, n_k, 96, 96]
    assert len(docs.of("event")) == 2
    expected = expected_frames(n_m, n_k)
    for resource in resources:
        # one event = all the rows of one acquisition
        assert _covered(docs.of("stream_datum"), resource["uid"]) == [0]
        np.testing.assert_array_equal(_consolidated(docs, resource), expected)


def test_abort_mid_scan_documents_the_rows_written(
    make_detector: Any, run_engine: Any, service: Any, expected_frames: Any
) -> None:
    from bluesky.utils import RunEngineInterrupted
    from stemdaq_client import Client
    from stemdaq_client.ophyd import fly_rows

    n_m, n_k = 32, 16  # ~1.5 s of frames at 3 ms each
    det = make_detector((n_m, n_k))
    docs = Documents()

    pausing: list[threading.Thread] = []

    def pause_after_two_rows(name: str, doc: dict[str, Any]) -> None:
        # as Ctrl-C does, from another thread (request_pause waits for the RunEngine's loop)
        if name == "stream_datum" and doc["indices"]["stop"] >= 2 and not pausing:
            pausing.append(
                threading.Thread(target=run_engine.request_pause, kwargs={"defer": False})
            )
            pausing[0].start()

    token = run_engine.subscribe(pause_after_two_rows)
    with pytest.raises(RunEngineInterrupted):
        run_engine(fly_rows(det, n_m, flush_period=0.2), docs)
    run_engine.unsubscribe(token)
    pausing[0].join(timeout=30)
    assert run_engine.state == "paused"
    run_engine.abort("test: abort mid-scan")

    (stop,) = docs.of("stop")
    assert stop["exit_status"] == "abort"
    (resource,) = docs.of("stream_resource")
    config = docs.of("descriptor")[0]["configuration"]["stemdaq"]["data"]
    with Client(service.url) as client:
        acq = client.get(config["stemdaq-acquisition_id"])
    assert acq.state.value == "aborted"
    assert 2 <= acq.rows_written < n_m
    # the documents say exactly which rows the file holds
    assert _covered(docs.of("stream_datum"), resource["uid"]) == list(range(acq.rows_written))
    data = _consolidated(docs, resource)
    assert data.shape[0] == acq.rows_written
    np.testing.assert_array_equal(data, expected_frames(n_m, n_k)[: acq.rows_written])


def test_trigger_reports_progress_to_watchers(make_detector: Any, run_engine: Any) -> None:
    from bluesky.run_engine import call_in_bluesky_event_loop

    det = make_detector((3, 8))
    updates: list[dict[str, Any]] = []

    async def trigger_once() -> None:
        await det.stage()
        try:
            status = det.trigger()
            status.watch(lambda **fields: updates.append(fields))
            await status
        finally:
            await det.unstage()

    call_in_bluesky_event_loop(trigger_once())
    assert updates, "no progress update reached the watcher"
    assert updates[-1]["target"] == 3  # rows
    assert updates[-1]["current"] == 3
    assert call_in_bluesky_event_loop(det.rows_written.get_value()) == 3
