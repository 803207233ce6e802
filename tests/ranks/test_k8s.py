"""deploy/k8s and deploy/compose.yml, checked offline: against the Kubernetes schemas
(kubernetes-validate) and against the code (ports, probe paths, env names, CLI flags)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml
from stemdaq.api.app import create_app
from stemdaq.cli import app as cli_app
from stemdaq.rank.server import RANK_ROUTES, create_rank_app
from stemdaq.routing.server import FAN_ROUTES
from stemdaq.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = kubernetes_validate.latest_version()


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for name in kustomization["resources"]:
        for doc in _docs(K8S / name):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def _container(manifests: dict, kind: str, name: str) -> dict[str, Any]:
    return manifests[(kind, name)]["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _cli_options(command: str) -> set[str]:
    cmd = typer.main.get_command(cli_app).commands[command]  # type: ignore[attr-defined]
    return {opt for param in cmd.params for opt in param.opts}


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    files = sorted(K8S.glob("*.yaml"))
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert {f.name for f in files} - {"kustomization.yaml"} == listed  # nothing left out
    n = 0
    for path in files:
        if path.name == "kustomization.yaml":
            continue
        for doc in _docs(path):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            n += 1
    assert n == 7


def test_host_network_overlay_patches_a_valid_fan() -> None:
    overlay = K8S / "overlays" / "host-network"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../.."]
    patch = yaml.safe_load((overlay / kustomization["patches"][0]["path"]).read_text())
    fan = _manifests()[(patch["kind"], patch["metadata"]["name"])]
    fan["spec"]["template"]["spec"].update(patch["spec"]["template"]["spec"])
    assert fan["spec"]["template"]["spec"]["hostNetwork"] is True
    kubernetes_validate.validate(fan, K8S_VERSION, strict=True)


def _setting_exists(env_name: str) -> bool:
    path = env_name.removeprefix("STEMDAQ_").lower().split("__")
    model: Any = Settings
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            return False
        model = field.annotation
    return True


def test_manifests_agree_with_the_code() -> None:
    m = _manifests()
    defaults = Settings()
    # ranks: a StatefulSet behind a headless Service, index = pod ordinal, port and probes
    ranks = m[("StatefulSet", "stemdaq-rank")]
    n = ranks["spec"]["replicas"]
    assert m[("Service", ranks["spec"]["serviceName"])]["spec"]["clusterIP"] == "None"
    rank = _container(m, "StatefulSet", "stemdaq-rank")
    assert rank["command"][:2] == ["stemdaq", "rank"]
    assert {a for a in rank["command"] if a.startswith("--")} <= _cli_options("rank")
    rank_port = int(_env(rank)["STEMDAQ_RANK_PORT"])
    assert rank["ports"][0]["containerPort"] == rank_port
    rank_app_paths = {r.path for r in create_rank_app(defaults, 0).routes}  # type: ignore[attr-defined]
    assert set(RANK_ROUTES) <= rank_app_paths
    # the fan: one data port per rank, from fan_port on
    fan = _container(m, "Deployment", "stemdaq-fan")
    assert fan["command"][:2] == ["stemdaq", "fan"]
    assert {a for a in fan["command"] if a.startswith("--")} <= _cli_options("fan")
    fan_env = _env(fan)
    assert int(fan_env["STEMDAQ_RANKS"]) == n
    fan_port, control = int(fan_env["STEMDAQ_FAN_PORT"]), int(fan_env["STEMDAQ_FAN_CONTROL_PORT"])
    fan_ports = {p["name"]: p["containerPort"] for p in fan["ports"]}
    assert fan_ports == {"control": control} | {f"rank-{i}": fan_port + i for i in range(n)}
    service_ports = {p["name"]: p["port"] for p in m[("Service", "stemdaq-fan")]["spec"]["ports"]}
    assert service_ports == fan_ports
    # the API: drives those ranks and that fan
    api = _container(m, "Deployment", "stemdaq-api")
    assert {a for a in api["command"] if a.startswith("--")} <= _cli_options("serve")
    env = _env(api)
    assert int(env["STEMDAQ_RANKS"]) == n
    assert json.loads(env["STEMDAQ_RANK_URLS"]) == [
        f"http://stemdaq-rank-{i}.stemdaq-ranks:{rank_port}" for i in range(n)
    ]
    assert env["STEMDAQ_FAN_URL"] == f"http://stemdaq-fan:{control}"
    assert env["STEMDAQ_FAN_HOST"] == "stemdaq-fan" and int(env["STEMDAQ_FAN_PORT"]) == fan_port
    settings = Settings.model_validate(
        {
            "ranks": n,
            "rank_urls": json.loads(env["STEMDAQ_RANK_URLS"]),
            "fan_url": env["STEMDAQ_FAN_URL"],
        }
    )
    assert settings.ranks == n
    openapi = create_app(defaults).openapi()["paths"]
    assert api["ports"][0]["containerPort"] == int(env["STEMDAQ_API__PORT"])
    # every probe path is served, every STEMDAQ_* variable is a setting, requests = limits
    served = {
        "stemdaq-rank": rank_app_paths,
        "stemdaq-fan": set(FAN_ROUTES),
        "stemdaq-api": openapi,
    }
    for (kind, name), doc in m.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] in served[name]
        c = pod["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports.values()
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == "/healthz" in served[name], (name, probe)
        assert c["resources"]["requests"] == c["resources"]["limits"], name
        for var in _env(c):
            assert _setting_exists(var), f"{name}: {var} is not a setting"


@pytest.mark.parametrize("service", ["fan", "rank0", "rank1", "stemdaq-ranks"])
def test_compose_has_the_ranks(service: str) -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yml").read_text())
    services = compose["services"]
    s = services[service]
    assert s["profiles"] == ["ranks"]
    assert s["healthcheck"]["test"][0] == "CMD"
    command = s["command"]
    assert {a for a in command if a.startswith("--")} <= _cli_options(command[1])
    for var in s.get("environment", {}):
        if var.startswith("STEMDAQ_"):
            assert _setting_exists(var), f"{service}: {var}"
    if service == "stemdaq-ranks":
        env = s["environment"]
        urls = json.loads(env["STEMDAQ_RANK_URLS"])
        assert urls == ["http://rank0:8100", "http://rank1:8100"] and env["STEMDAQ_RANKS"] == "2"
        assert env["STEMDAQ_FAN_URL"] == "http://fan:8090" and env["STEMDAQ_FAN_HOST"] == "fan"
