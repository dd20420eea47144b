"""deploy/ checked as far as this machine can: the config loads, compose and the manifests parse
and name the image, ports and probes the relay really has, the systemd unit verifies."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.app import create_app
from proxy.config import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ENV = {"RELAY_ADMIN_TOKEN": "t" * 24, "RELAY_WEB_WRITE_KEY": "pk_x", "BACKEND_WRITE_KEY": "s" * 24}


def routes() -> set[str]:
    settings = load_settings(DEPLOY / "relay.toml", ENV)
    routes = create_app(settings).router.routes()
    return {route.resource.canonical for route in routes if route.resource is not None}


def test_container_config_loads_and_serves_the_probed_paths() -> None:
    settings = load_settings(DEPLOY / "relay.toml", ENV)
    assert (settings.server.listen_port, settings.admin.listen_port) == (8080, 8081)
    assert settings.spool.path == "/var/lib/relay/spool.sqlite3"
    assert {"/healthz", "/readyz"} <= routes()


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^USER relay$", text, re.M)
    assert "HEALTHCHECK" in text
    assert "127.0.0.1:8080/healthz" in text
    assert re.search(r"^EXPOSE 8080 8081$", text, re.M)
    assert "COPY deploy/relay.toml /etc/relay/relay.toml" in text


def test_compose_names_the_image_ports_volume_and_redis() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    relay = compose["services"]["relay"]
    assert relay["image"] == "relay:latest"
    assert relay["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "127.0.0.1:8081:8081" in relay["ports"]  # admin stays on loopback
    assert "127.0.0.1:8080:8080" in relay["ports"]
    assert "spool:/var/lib/relay" in relay["volumes"]
    assert "/readyz" in " ".join(relay["healthcheck"]["test"])
    assert compose["services"]["redis"]["image"].startswith("redis:")
    assert set(compose["volumes"]) == {"spool", "redis"}


def test_kubernetes_manifests_probe_real_paths_on_real_ports() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "relay.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in docs}
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= set(kinds)
    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "relay:latest"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"public": 8080, "admin": 8081}
    paths = routes()
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in paths
        assert get["port"] in ports
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["spool"] == "/var/lib/relay"
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    services = [doc for doc in docs if doc["kind"] == "Service"]
    for service in services:
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_caddy_snippet_mounts_the_prefix() -> None:
    text = (DEPLOY / "caddy" / "Caddyfile").read_text()
    assert "handle /k7q2xz/*" in text
    assert "reverse_proxy 127.0.0.1:8080" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "relay.service").read_text()
    # verify checks that ExecStart's binary exists: point it at this venv's Python.
    assert "ExecStart=/opt/relay/.venv/bin/python -m proxy serve" in unit
    local = tmp_path / "relay.service"
    local.write_text(unit.replace("/opt/relay/.venv/bin/python", sys.executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if "relay.service" in line and "Failed to" not in line  # no systemd running here
    ]
    assert result.returncode == 0 or not problems, result.stderr
    assert not problems, result.stderr
