"""Dockerfile and deploy/compose.yml, checked without a Docker engine (none on CI)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import typer.main
import yaml
from stemdaq.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _cli_options(command: str) -> set[str]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    return {opt for param in cmd.params for opt in param.opts}


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE)
    assert len(stages) >= 2 and stages[-1][0] == "python:3.11-slim"
    for directive in (
        "USER stemdaq",
        'VOLUME ["/data"]',
        "EXPOSE 8000",
        "HEALTHCHECK",
        "STOPSIGNAL SIGINT",
    ):
        assert directive in text, directive
    assert "/healthz" in text and "pip wheel" in text
    # the builder has a C compiler: the image must get the compiled walk and lane, not the fallback
    assert "build-essential" in text and "b.COMPILED" in text and "l.BUILT" in text
    cmd = re.search(r"^CMD \[(.*)\]", text, re.MULTILINE)
    assert cmd is not None
    args = [a.strip().strip('"') for a in cmd.group(1).split(",")]
    assert args[:2] == ["stemdaq", "serve"]
    assert {a for a in args if a.startswith("--")} <= _cli_options("serve")
    ignore = (ROOT / ".dockerignore").read_text()
    assert "!service/" in ignore and "!clients/" in ignore


def test_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"stemdaq", "sim", "prometheus"}
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"][0] == "CMD", name
    assert services["stemdaq"]["depends_on"]["sim"]["condition"] == "service_healthy"
    assert services["prometheus"]["depends_on"]["stemdaq"]["condition"] == "service_healthy"
    assert services["stemdaq"]["build"]["context"] == ".."
    assert (ROOT / "deploy" / services["stemdaq"]["build"]["context"] / "Dockerfile").is_file()
    assert "stemdaq-data:/data" in services["stemdaq"]["volumes"]
    env = services["stemdaq"]["environment"]
    assert env["STEMDAQ_ACQUISITION__DETECTOR_URL"] == "http://sim:8080"
    assert env["STEMDAQ_ACQUISITION__STREAM_ENDPOINT"] == "tcp://sim:31001"
    sim_cmd = services["sim"]["command"]
    assert sim_cmd[:2] == ["stemdaq", "sim"]
    assert {a for a in sim_cmd if a.startswith("--")} <= _cli_options("sim")
    assert "stemdaq-data" in compose["volumes"]


def test_prometheus_scrapes_stemdaq() -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "stemdaq"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["stemdaq:8000"]


@pytest.mark.skipif(
    not (shutil.which("docker-compose") or shutil.which("docker")),
    reason="neither docker-compose nor the docker compose plugin is installed",
)
def test_compose_config_is_accepted_by_docker_compose() -> None:
    """``docker compose config`` (v2 plugin) or ``docker-compose config`` (v1) parses the file."""
    import subprocess

    compose = ROOT / "deploy" / "compose.yml"
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose", "-f", str(compose), "config", "-q"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose", "-f", str(compose), "config", "-q"])
    results = [subprocess.run(c, capture_output=True, text=True, timeout=60) for c in candidates]
    # a docker client without the compose plugin does not know "compose" (nor its -f flag)
    usable = [r for r in results if not re.search(r"unknown (command|shorthand flag)", r.stderr)]
    if not usable:
        pytest.skip("docker has no compose plugin and docker-compose is missing")
    assert all(r.returncode == 0 for r in usable), [r.stderr for r in usable]
