"""The REST API through the client, against a real uvicorn server and the fake engine."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from stemdaq.models import DropReason
from stemdaq.settings import Settings
from stemdaq_client import (
    AcquisitionState,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    ServerError,
    Unauthorized,
)

from .conftest import TOKEN, ServerThread

ID_RE = re.compile(r"^\d{8}-\d{6}-\d{4}$")


def test_health_status_and_operation_ids(client: Client, server: ServerThread) -> None:
    assert client.health()["status"] == "ok"
    status = client.status()
    assert status.state == "idle" and status.acquisition is None
    spec = httpx.get(f"{server.url}/openapi.json").json()
    ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    assert {
        "get_status",
        "get_config",
        "put_config",
        "arm_acquisition",
        "list_acquisitions",
        "get_acquisition",
        "stop_acquisition",
        "abort_acquisition",
        "get_acquisition_metadata",
        "stream_events",
        "get_health",
        "get_metrics",
    } <= ids


def test_config_partial_update_and_422(client: Client) -> None:
    before = client.get_config()
    after = client.put_config(
        scan_shape=[32, 8], scan_unit="um", calibration={"camera_length": 0.1}
    )
    assert after.scan_shape == [32, 8] and after.scan_unit == "um"
    assert after.stream_endpoint == before.stream_endpoint  # untouched fields stay
    assert (
        after.model_extra is not None and after.model_extra["calibration"]["camera_length"] == 0.1
    )
    with pytest.raises(InvalidRequest) as err:
        client.put_config(scan_shape=[-1, 4])
    assert err.value.status == 422 and "scan_shape" in err.value.detail
    with pytest.raises(InvalidRequest, match="no_such_key"):
        client.put_config(no_such_key=1)
    with pytest.raises(InvalidRequest, match="unknown field"):
        client.put_config(file_template="{user}.nxs")
    assert client.get_config().scan_shape == [32, 8]  # a rejected PUT changes nothing


def test_arm_progress_stop_and_history(client: Client, data_dir: Path) -> None:
    acq = client.arm(scan_shape=[20, 20], stream_endpoint="fake://hold")
    assert ID_RE.match(acq.id) and acq.state is AcquisitionState.ARMED
    assert Path(acq.file_path).is_relative_to(data_dir.resolve())
    assert acq.frames_expected == 400
    with pytest.raises(Conflict) as err:
        client.arm()
    assert err.value.status == 409 and acq.id in err.value.detail
    # progress: frames_written grows monotonically while acquiring
    seen = [client.get(acq.id).frames_written for _ in range(20)]
    assert seen == sorted(seen)
    assert client.status().state in ("armed", "acquiring")
    client.stop(acq.id)
    final = client.wait(acq.id, timeout=10)
    assert final.state is AcquisitionState.COMPLETED and final.frames_written == 400
    assert Path(final.file_path).is_file()
    assert client.stop(acq.id).state is AcquisitionState.COMPLETED  # idempotent
    second = client.arm(scan_shape=[2, 2])
    client.wait(second.id, timeout=10)
    page = client.list(limit=1)
    assert page.total == 2 and [a.id for a in page.items] == [second.id]
    assert [a.id for a in client.list(offset=1).items] == [acq.id]
    assert client.status().state == "idle"


def test_abort(client: Client) -> None:
    acq = client.arm(stream_endpoint="fake://hold")
    client.abort(acq.id)
    assert client.wait(acq.id, timeout=10).state is AcquisitionState.ABORTED


def test_not_found(client: Client) -> None:
    for call in (client.get, client.stop, client.abort, client.metadata):
        with pytest.raises(NotFound) as err:
            call("20200101-000000-0001")
        assert err.value.status == 404


def test_detector_refusal_is_502_and_status_error(client: Client) -> None:
    with pytest.raises(ServerError) as err:
        client.arm(stream_endpoint="fake://detector-refuses")
    assert err.value.status == 502 and "refused" in err.value.detail
    status = client.status()
    assert status.state == "error" and status.acquisition is not None
    assert status.acquisition.state is AcquisitionState.FAILED


@pytest.mark.parametrize("template", ["../escape_{id}.nxs", "/tmp/abs_{id}.nxs", "link/{id}.nxs"])
def test_path_traversal_is_rejected(
    client: Client, data_dir: Path, tmp_path: Path, template: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (data_dir / "link").symlink_to(outside)
    with pytest.raises(InvalidRequest) as err:
        client.put_config(file_template=template)
    assert err.value.status == 422
    with pytest.raises(InvalidRequest):
        client.arm(file_template=template)
    assert client.status().acquisition is None
    assert list(outside.iterdir()) == [] and not list(tmp_path.glob("escape_*"))


def test_token_protects_control_endpoints(
    start_server: Callable[..., ServerThread], make_settings: Callable[..., Settings]
) -> None:
    server = start_server(make_settings(api={"token": TOKEN}))
    anonymous, wrong, good = (
        Client(server.url, token=""),
        Client(server.url, token="nope"),
        Client(server.url, TOKEN),
    )
    assert anonymous.status().state == "idle"  # reads stay open
    for c in (anonymous, wrong):
        with pytest.raises(Unauthorized) as err:
            c.put_config(scan_shape=[4, 4])
        assert err.value.status == 401
        with pytest.raises(Unauthorized):
            c.arm()
        with pytest.raises(Unauthorized):
            c.stop("x")
        with pytest.raises(Unauthorized):
            c.abort("x")
    r = httpx.post(f"{server.url}/api/v1/acquisitions", json={})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "a bearer token is required"}
    acq = good.arm(scan_shape=[2, 2])
    assert good.wait(acq.id, timeout=10).state is AcquisitionState.COMPLETED


def test_protect_reads(
    start_server: Callable[..., ServerThread], make_settings: Callable[..., Settings]
) -> None:
    server = start_server(make_settings(api={"token": TOKEN, "protect_reads": True}))
    with pytest.raises(Unauthorized):
        Client(server.url, token="").status()
    assert Client(server.url, TOKEN).status().state == "idle"
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # liveness stays open


def test_token_from_env(
    monkeypatch: pytest.MonkeyPatch, start_server: Callable[..., ServerThread], data_dir: Path
) -> None:
    monkeypatch.setenv("STEMDAQ_API_TOKEN", TOKEN)
    server = start_server(Settings(data_dir=data_dir, acquisition={"stream_endpoint": "fake://"}))
    with pytest.raises(Unauthorized):
        Client(server.url, token="").put_config(scan_shape=[4, 4])
    assert Client(server.url).put_config(scan_shape=[4, 4]).scan_shape == [
        4,
        4,
    ]  # client reads env too


def test_events_deliver_state_changes(client: Client) -> None:
    events: list[tuple[str, str]] = []
    ready = threading.Event()

    def follow() -> None:
        with Client(client.url) as c:
            for event in c.events(timeout=10):
                if event.event == "snapshot" and not ready.is_set():
                    continue
                events.append((event.event, event.acquisition.state.value))
                if event.acquisition.state.is_final:
                    return

    first = client.arm(scan_shape=[2, 2])  # so the stream starts with a snapshot
    client.wait(first.id, timeout=10)
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    import time

    time.sleep(0.3)  # let the subscription open
    ready.set()
    acq = client.arm(scan_shape=[40, 40])
    thread.join(timeout=15)
    assert not thread.is_alive()
    states = [s for kind, s in events if kind == "state"]
    assert states[-1] == "completed", events
    assert "acquiring" in states and "finishing" in states
    assert any(kind == "progress" for kind, _ in events)
    assert client.get(acq.id).state is AcquisitionState.COMPLETED


def test_metrics_names(client: Client, server: ServerThread) -> None:
    acq = client.arm(scan_shape=[4, 4])
    client.wait(acq.id, timeout=10)
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "stemdaq_frames_received_total",
        "stemdaq_frames_written_total",
        "stemdaq_frames_dropped_total",
        "stemdaq_bytes_written_total",
        "stemdaq_write_duration_seconds_bucket",
        "stemdaq_write_duration_seconds_sum",
        "stemdaq_queue_depth",
        "stemdaq_state",
    ):
        assert name in text, name
    for reason in DropReason:
        assert f'stemdaq_frames_dropped_total{{reason="{reason.value}"}}' in text
    assert "stemdaq_frames_written_total 16.0" in text
    assert 'stemdaq_state{stemdaq_state="idle"} 1.0' in text


def test_metadata_tree(client: Client) -> None:
    acq = client.arm(scan_shape=[3, 5])
    client.wait(acq.id, timeout=10)
    meta = client.metadata(acq.id)
    assert meta["complete"] is True and meta["file_path"] == acq.file_path
    entry = meta["tree"]["children"]["entry"]
    assert entry["attrs"]["NX_class"] == "NXentry"
    data = entry["children"]["data"]
    assert (
        data["shape"] == [3, 5, 8, 8]
        and data["dtype"] == "uint16"
        and data["chunks"] == [1, 1, 8, 8]
    )
    assert data["filters"][0]["name"].startswith("deflate") and "value" not in data
    assert entry["children"]["title"]["value"] == "fake"
