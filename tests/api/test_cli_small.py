"""Small fixes from user reports: list filter, metadata of a crash-left file, offline /docs,
``stemdaq sim`` on a taken port, ``serve --help`` defaults, ``status`` at 80 columns, and the
final rate of the progress bar. Real uvicorn servers, real ``stemdaq`` processes."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urljoin, urlsplit

import h5py
import httpx
import pytest
from polling import free_port
from rich.console import Console
from stemdaq.commands.progress import follow
from stemdaq.models import AcquisitionState
from stemdaq.settings import Settings
from stemdaq_client import Client

from .conftest import ServerThread

STEMDAQ = [sys.executable, "-m", "stemdaq.cli"]


def stemdaq(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``stemdaq ARGS`` as a process, 80 columns wide unless ``env`` says otherwise."""
    return subprocess.run(
        [*STEMDAQ, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
    )


# -- GET /acquisitions?state= --------------------------------------------------------------------


def test_list_filters_by_state_and_rejects_unknown_state(
    server: ServerThread, client: Client
) -> None:
    first = client.arm(scan_shape=[2, 2])
    client.wait(first.id, timeout=10)
    held = client.arm(scan_shape=[4, 4], stream_endpoint="fake://hold")
    client.abort(held.id)
    assert client.wait(held.id, timeout=10).state.value == "aborted"
    second = client.arm(scan_shape=[2, 3])
    client.wait(second.id, timeout=10)

    with httpx.Client(base_url=server.url, timeout=10) as http:
        page = http.get("/api/v1/acquisitions", params={"state": "completed"}).json()
        assert [i["id"] for i in page["items"]] == [second.id, first.id]
        assert page["total"] == 2 and {i["state"] for i in page["items"]} == {"completed"}
        page = http.get("/api/v1/acquisitions", params={"state": "aborted"}).json()
        assert [i["id"] for i in page["items"]] == [held.id] and page["total"] == 1
        page = http.get("/api/v1/acquisitions", params={"state": "failed"}).json()
        assert page["items"] == [] and page["total"] == 0
        assert http.get("/api/v1/acquisitions").json()["total"] == 3  # no filter: all
        bogus = http.get("/api/v1/acquisitions", params={"state": "bogus"})
        assert bogus.status_code == 422
        assert "completed_with_gaps" in bogus.text  # the answer lists the states there are
        schema = http.get("/openapi.json").json()
    params = schema["paths"]["/api/v1/acquisitions"]["get"]["parameters"]
    state = next(p for p in params if p["name"] == "state")
    assert {"$ref": "#/components/schemas/AcquisitionState"} in state["schema"]["anyOf"]
    enum = schema["components"]["schemas"]["AcquisitionState"]["enum"]
    assert set(enum) == {s.value for s in AcquisitionState}


# -- GET /acquisitions/{id}/metadata of a file a crash left as .partial ---------------------------

_CRASH_WRITER = textwrap.dedent(
    """
    import os, sys
    import h5py
    f = h5py.File(sys.argv[1], "w", libver="latest")
    entry = f.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    data = entry.create_dataset("data", shape=(3, 5, 8, 8), dtype="u2", chunks=(1, 1, 8, 8))
    f.swmr_mode = True
    data[0, 0] = 7
    f.flush()
    os._exit(0)  # killed: the file is never closed, its SWMR-write flag stays set
    """
)


def test_metadata_of_a_final_acquisition_with_only_the_partial_file(client: Client) -> None:
    acq = client.arm(scan_shape=[3, 5])
    assert client.wait(acq.id, timeout=10).state.is_final
    final = Path(acq.file_path)
    partial = final.with_name(final.name + ".partial")
    final.unlink()  # as after a crash before the rename
    subprocess.run([sys.executable, "-c", _CRASH_WRITER, str(partial)], check=True, timeout=60)
    with pytest.raises(OSError):  # a plain open fails: only SWMR read mode opens it
        h5py.File(partial, "r").close()

    meta = client.metadata(acq.id)
    assert meta["complete"] is False and meta["file_path"] == str(partial)
    entry = meta["tree"]["children"]["entry"]
    assert entry["attrs"]["NX_class"] == "NXentry"
    assert entry["children"]["data"]["shape"] == [3, 5, 8, 8]


# -- /docs and /redoc without internet -----------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_server(server: ServerThread, page: str) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        response = http.get(page)
        assert response.status_code == 200 and "text/html" in response.headers["content-type"]
        html = response.text
        outside = [
            u
            for u in re.findall(r"https?://[^\s\"'<>)]+", html)
            if urlsplit(u).netloc != urlsplit(server.url).netloc
        ]
        assert outside == []
        refs = re.findall(r"<(?:script|link)\b[^>]*?(?:src|href)=\"([^\"]+)\"", html)
        assets = [r for r in refs if r.endswith((".js", ".css"))]
        assert assets, html  # the page loads its UI from somewhere: it must be us
        assert any(a.endswith(".js") for a in assets)
        for ref in refs:
            asset = http.get(urljoin(server.url + page, ref))
            assert asset.status_code == 200, ref
            assert len(asset.content) > 1000, ref  # the real bundle, not an empty stub
        spec = re.search(r"""(?:url: |spec-url=)['"]([^'"]+)['"]""", html)
        assert spec and http.get(urljoin(server.url + page, spec[1])).status_code == 200


# -- stemdaq sim on a taken port -----------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(("flag", "what"), [("--rest-port", "REST"), ("--stream-port", "stream")])
def test_sim_on_a_taken_port_is_one_line_and_exit_2(taken_port: int, flag: str, what: str) -> None:
    other = "--stream-port" if flag == "--rest-port" else "--rest-port"
    result = stemdaq("sim", flag, str(taken_port), other, "0", timeout=60)
    assert result.returncode == 2
    assert result.stderr == (
        f"stemdaq sim: cannot bind {what} port {taken_port}: address already in use\n"
    )
    assert result.stdout == ""  # no ports reported: nothing started


# -- stemdaq serve --help, and a default flag does not hide the env ------------------------------


def _option_blocks(help_text: str) -> dict[str, str]:
    """``{"--host": "its help text, continuation lines joined"}`` from rich's options panel."""
    blocks: dict[str, str] = {}
    name = None
    for line in help_text.splitlines():
        inner = line.strip().strip("│").strip()
        m = re.match(r"(--[\w-]+)\s+(.*)", inner)
        if m:
            name = m[1]
            blocks[name] = m[2]
        elif name and inner and not line.lstrip().startswith("╰"):
            blocks[name] += " " + inner
    return blocks


def test_serve_help_shows_every_default_at_80_columns() -> None:
    result = stemdaq("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    blocks = _option_blocks(result.stdout)
    assert set(blocks) == {"--host", "--port", "--data-dir", "--config", "--ranks", "--help"}
    assert "[default: 127.0.0.1]" in blocks["--host"]
    assert "[default: 8000]" in blocks["--port"]
    assert "[default: data]" in blocks["--data-dir"]
    assert "default: none" in blocks["--config"]
    assert "default: 1" in blocks["--ranks"]


def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.1)
    return False


@pytest.mark.parametrize("flag", [False, True])
def test_serve_port_from_env_unless_the_flag_is_given(tmp_path: Path, flag: bool) -> None:
    env_port, flag_port = free_port(), free_port()
    args = ["serve", "--data-dir", str(tmp_path)] + (["--port", str(flag_port)] if flag else [])
    proc = subprocess.Popen(
        [*STEMDAQ, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STEMDAQ_API__PORT": str(env_port)},
    )
    try:
        assert _wait_healthy(flag_port if flag else env_port, proc), proc.poll()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err


# -- stemdaq status at 80 columns ----------------------------------------------------------------


@pytest.fixture
def long_dir_server(
    tmp_path: Path, start_server: Callable[..., ServerThread]
) -> tuple[ServerThread, Path]:
    data_dir = tmp_path / ("beamtime-2026-11-proposal-" + "x" * 40) / ("sample-" + "y" * 40)
    data_dir.mkdir(parents=True)
    settings = Settings(
        data_dir=data_dir, acquisition={"stream_endpoint": "fake://", "scan_shape": (4, 4)}
    )
    return start_server(settings), data_dir


def test_status_prints_whole_paths_at_80_columns(
    long_dir_server: tuple[ServerThread, Path],
) -> None:
    server, data_dir = long_dir_server
    with Client(server.url, token="") as c:
        acq = c.arm(file_template="scan-with-a-rather-long-name-{id}.nxs")
        acq = c.wait(acq.id, timeout=10)
    assert len(acq.file_path) > 160  # far wider than the terminal

    result = stemdaq("status", "--url", server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("stemdaq ") and lines[0].endswith(": idle")
    values = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert values["data dir"] == str(data_dir)
    assert values["file"] == acq.file_path
    assert values["acquisition"] == f"{acq.id} (completed)"
    assert values["frames"] == "16 / 16 written, 0 dropped"


# -- the final line of the progress bar ----------------------------------------------------------


def _snapshot(state: AcquisitionState, written: int, fps: float, elapsed: float) -> object:
    return SimpleNamespace(
        state=state,
        frames_written=written,
        frames_expected=1000,
        frames_dropped=0,
        frames_per_second=fps,
        elapsed_seconds=elapsed,
    )


def test_progress_ends_with_the_average_rate() -> None:
    snapshots = iter(
        [
            _snapshot(AcquisitionState.ACQUIRING, 300, 900.0, 0.5),
            _snapshot(AcquisitionState.COMPLETED, 1000, 0.0, 4.0),  # engines report 0 once done
        ]
    )
    out = io.StringIO()
    last = follow(lambda: next(snapshots), "scan", poll=0.0, console=Console(file=out, width=120))
    assert last.state is AcquisitionState.COMPLETED
    final = out.getvalue().strip().splitlines()[-1]
    assert "1000/1000" in final and re.search(r"\b250 frames/s", final), final


def test_progress_of_a_series_that_never_started_shows_zero() -> None:
    out = io.StringIO()
    follow(
        lambda: _snapshot(AcquisitionState.FAILED, 0, 0.0, 0.0),
        "scan",
        poll=0.0,
        console=Console(file=out, width=120),
    )
    assert re.search(r"\b0 frames/s", out.getvalue())
