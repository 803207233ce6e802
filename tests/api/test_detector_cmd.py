"""``stemdaq detector status|disarm|abort|initialize`` and the SIMPLON client's state, description
and arm refusal, against the real simulator (a ``stemdaq sim`` process, or in-process on free
ports) over loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sim_cli import sim_cli
from stemdaq.detector import SimplonClient
from stemdaq.errors import DetectorError
from stemdaq.sim import SimulatedDetector
from stemdaq.sim.server import RestServer

from .conftest import ServerThread

STEMDAQ = [sys.executable, "-m", "stemdaq.cli"]


def stemdaq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``stemdaq ARGS`` as a process (wide terminal: messages on one line)."""
    return subprocess.run(
        [*STEMDAQ, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "300"},
    )


def state_line(result: subprocess.CompletedProcess[str]) -> str:
    """The ``state: X`` value the command printed last."""
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("state: "), result.stdout
    return result.stdout.splitlines()[-1].removeprefix("state: ")


@pytest.fixture(scope="module")
def sim_process() -> Iterator[tuple[str, str]]:
    """``stemdaq sim --rest-port 0 --stream-port 0`` as a process; (SIMPLON URL, stream)."""
    with sim_cli("--frame-time", "0.01") as urls:
        yield urls


@pytest.fixture
def sim_url(sim_process: tuple[str, str]) -> str:
    return sim_process[0]


@pytest.fixture
def sim(sim_url: str) -> Iterator[SimplonClient]:
    """A SIMPLON client of the sim, idle at the start and at the end of each test."""
    with SimplonClient(sim_url) as det:
        det.command("initialize")
        yield det
        det.command("initialize")


@pytest.fixture
def det() -> Iterator[SimulatedDetector]:
    """An in-process simulator; its thread errors fail the test."""
    d = SimulatedDetector(rest_port=0, stream_port=0, frame_time=0.01)
    d.start()
    d.wait_for_listen(10)
    yield d
    d.stop()
    d.maybe_raise()


# -- SimplonClient -------------------------------------------------------------------------------


def test_state_and_description(det: SimulatedDetector) -> None:
    with SimplonClient(det.rest_url) as c:
        assert c.state() == "idle"
        assert c.description() == "Dectris ARINA Si (stemdaq simulator)"
        c.configure_scan(10)
        assert c.arm() == det.sequence_id
        assert c.state() == "ready" == det.state


def test_description_is_none_where_the_detector_has_none() -> None:
    app = FastAPI()

    @app.get("/detector/api/version/")
    async def version() -> dict[str, str]:
        return {"value": "1.8.0"}

    @app.get("/detector/api/1.8.0/status/state")
    async def state() -> dict[str, str]:
        return {"value": "idle"}

    server = RestServer(app, "127.0.0.1", 0)  # the sim's own server: real uvicorn, free port
    server.start()
    try:
        server.wait_started(10)
        with SimplonClient(f"http://127.0.0.1:{server.port}") as c:
            assert c.description() is None  # 404: no such parameter
            assert c.state() == "idle"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("trigger", "state", "why"),
    [
        (False, "ready", "an earlier acquisition left it armed?"),
        (True, "acquire", "an earlier acquisition left it running?"),
    ],
)
def test_arm_refusal_names_the_state_and_the_fix(
    det: SimulatedDetector, trigger: bool, state: str, why: str
) -> None:
    with SimplonClient(det.rest_url) as c:
        c.configure_scan(5000)  # 50 s of frames at 10 ms: still running while we look
        c.arm()
        if trigger:
            det.trigger()
        with pytest.raises(DetectorError) as err:
            c.arm()
        assert str(err.value) == (
            f"detector at {det.rest_url} refused arm: it is in state {state!r} ({why}); "
            f"end that with `stemdaq detector abort {det.rest_url}` and try again"
        )
        c.abort()
        assert c.state() == "idle"
        assert c.arm() == det.sequence_id  # the fix works: armed again


def test_arm_of_an_unreachable_detector_says_unreachable(det: SimulatedDetector) -> None:
    url = det.rest_url
    with SimplonClient(url) as c:
        _ = c.version  # known before the detector goes away
        det.stop()
        with pytest.raises(DetectorError, match=r"^detector at .* unreachable"):
            c.arm()


# -- stemdaq detector ... ------------------------------------------------------------------------


def test_status_shows_model_version_and_state(sim: SimplonClient, sim_url: str) -> None:
    result = stemdaq("detector", "status", sim_url)
    assert result.stdout.splitlines()[:3] == [
        f"detector: {sim_url}",
        "description: Dectris ARINA Si (stemdaq simulator)",
        "SIMPLON: 1.8.0",
    ]
    assert state_line(result) == "idle"
    sim.configure_scan(10)
    sim.arm()
    assert state_line(stemdaq("detector", "status", sim_url)) == "ready"


@pytest.mark.parametrize("command", ["abort", "disarm"])
def test_abort_and_disarm_end_an_armed_detector(
    sim: SimplonClient, sim_url: str, command: str
) -> None:
    sim.configure_scan(10)
    sim.arm()
    assert sim.state() == "ready"
    result = stemdaq("detector", command, sim_url)
    assert result.stdout.splitlines()[0] == f"{command}: done"
    assert state_line(result) == "idle" == sim.state()
    sim.arm()  # armable again


def test_initialize_resets_a_running_detector(sim: SimplonClient, sim_url: str) -> None:
    sim.configure_scan(5000)
    sim.arm()
    sim.trigger()
    assert sim.state() == "acquire"
    result = stemdaq("detector", "initialize", sim_url, "--wait", "30")
    assert state_line(result) == "idle" == sim.state()


def test_acquire_on_an_armed_detector_fails_with_the_fix(
    sim: SimplonClient, sim_process: tuple[str, str], tmp_path: Path
) -> None:
    """The user's report: a killed acquisition left the detector armed; the next one says how
    to recover, and after ``stemdaq detector abort`` it works."""
    sim.configure_scan(10)
    sim.arm()  # left armed by "an earlier acquisition"
    sim_url, stream = sim_process
    args = ["acquire", "--detector", sim_url, "--stream", stream, "--scan", "4x4"]
    result = stemdaq(*args, "--timeout", "20", "--out", str(tmp_path / "a.nxs"))
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "refused arm: it is in state 'ready'" in message
    assert f"`stemdaq detector abort {sim_url}`" in message
    assert "Traceback" not in result.stderr

    assert state_line(stemdaq("detector", "abort", sim_url)) == "idle"
    result = stemdaq(*args, "--timeout", "20", "--out", str(tmp_path / "b.nxs"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.nxs").is_file()


@pytest.mark.parametrize("command", ["status", "disarm", "abort", "initialize"])
def test_unreachable_detector_is_one_line_and_exit_1(command: str) -> None:
    result = stemdaq("detector", command, "http://127.0.0.1:9", "--timeout", "5")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"stemdaq detector {command}: detector at http://127.0.0.1:9")
    assert "unreachable" in lines[0]


def test_something_that_is_not_a_detector_refuses(server: ServerThread) -> None:
    """The URL of the stemdaq service instead of the detector's: refused, one line, exit 1."""
    result = stemdaq("detector", "abort", server.url)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"stemdaq detector abort: no SIMPLON API found at {server.url}")
    for tried in ("/detector/api/version/", "/detector/api/1.8.0/", "/detector/api/1.6.0/"):
        assert tried in lines[0]  # says what it tried
    assert "simplon_version" in lines[0]  # and what to set
