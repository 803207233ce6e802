"""Config values that cannot work are refused (REST 422, CLI exit 2) and change nothing.

One service and one simulator for the module: every case must leave both as they were.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from .conftest import Serve, Sim, end_process, free_port, no_traceback, run_cli, start_sim

BAD = {
    "scan_shape-1e10": '{"scan_shape": [100000, 100000]}',
    "scan_step-nan": '{"scan_step": [NaN, 1]}',
    "scan_step-inf": '{"scan_step": [Infinity, 1]}',
    "scan_step-zero": '{"scan_step": [0, 1]}',
    "title-1MB": json.dumps({"metadata": {"title": "x" * 1_000_000}}),
    "template-state-dir": '{"file_template": ".stemdaq/acquisitions/{id}.json"}',
}


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[tuple[Serve, Sim]]:
    tmp = tmp_path_factory.mktemp("bounds")
    sim = start_sim(tmp / "sim.log")
    data = tmp / "data"
    data.mkdir()
    serve = Serve(data, free_port(), tmp / "serve.log")
    try:
        serve.start()
        yield serve, sim
    finally:
        for proc in serve.history:
            end_process(proc, grace=10)
        end_process(sim.proc)


def _put_raw(serve: Serve, method: str, path: str, text: str):
    return serve.request(method, path, content=text, headers={"content-type": "application/json"})


def _with_source(text: str, sim: Sim) -> str:
    """The bad body plus a working stream and detector: only the bad value can be refused."""
    source = f'"detector_url": "{sim.rest}", "stream_endpoint": "{sim.stream}", '
    return "{" + source + text.strip()[1:]


def _detail(r) -> str:
    return r.text


@pytest.mark.parametrize("case", list(BAD))
def test_put_config_refuses_and_changes_nothing(service, case):
    serve, _ = service
    before = serve.get("/config")
    r = _put_raw(serve, "PUT", "/config", BAD[case])
    assert r.status_code == 422, f"{case}: {r.status_code} {r.text[:500]}"
    no_traceback(r.text)
    if case == "scan_shape-1e10":
        detail = _detail(r)
        assert re.search(r"position", detail, re.I), detail
        assert re.search(r"memory|disk|GB|TB|GiB|TiB|bytes", detail, re.I), detail
    after = serve.get("/config")
    assert after == before
    # what GET gives, PUT takes back
    again = serve.request("PUT", "/config", json=after)
    assert again.status_code == 200, again.text[:500]


@pytest.mark.parametrize("case", list(BAD))
def test_arm_overrides_refused_and_nothing_armed(service, case):
    serve, sim = service
    before = serve.get("/acquisitions")["total"]
    armed_before = sim.times_armed()
    files_before = _data_files(serve)
    r = _put_raw(serve, "POST", "/acquisitions", _with_source(BAD[case], sim))
    if r.status_code == 201:  # accepted: do not leave it running for the next case
        serve.request("POST", f"/acquisitions/{r.json()['id']}/abort")
        serve.wait_final(r.json()["id"], 30)
        sim.wait_state(["idle"], 10)
    assert r.status_code == 422, f"{case}: {r.status_code} {r.text[:500]}"
    assert serve.get("/acquisitions")["total"] == before
    assert sim.times_armed() == armed_before
    assert _data_files(serve) == files_before


def _data_files(serve: Serve) -> set:
    return {p for p in serve.data_dir.rglob("*") if p.is_file() and ".stemdaq" not in p.parts}


def test_acquire_step_nan_is_a_usage_error(tmp_path):
    out = tmp_path / "nan.nxs"
    r = run_cli(
        "acquire",
        "--stream",
        f"tcp://127.0.0.1:{free_port()}",
        "--scan",
        "8x8",
        "--step",
        "nan",
        "--out",
        str(out),
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "step" in (r.stdout + r.stderr).lower()
    no_traceback(r.stdout + r.stderr)
    assert not out.exists() and not (tmp_path / "nan.nxs.partial").exists()
