"""The chart rendered by Helm's own engine (helm-python-sdk), for every values profile."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from extproc.control.stack import free_port, wait_until
from tests.helpers import ROOT

CHART = ROOT / "k8s" / "charts" / "extproc"
PROFILES = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "extproc-system"


def _oldest_supported() -> str:
    """The lowest Kubernetes version of the chart's kubeVersion constraint."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    found = re.search(r">=\s*v?(\d+\.\d+\.\d+)", constraint)
    assert found, constraint
    return found.group(1)


KUBE_VERSIONS = (_oldest_supported(), kubernetes_validate.latest_version())


@dataclass
class Rendered:
    """The objects of one render, with the template each came from."""

    objects: list[tuple[str, dict[str, Any]]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for _, o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for _, o in self.objects}


def profile_values(profile: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / f"{profile}-values.yaml").read_text()) or {}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="session")
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


@pytest.fixture(scope="session")
def render(chart: helm.Chart) -> Callable[..., Rendered]:
    def run(values: dict[str, Any]) -> Rendered:
        manifests = chart.render(values, name="extproc", namespace=NAMESPACE, is_install=True)
        objects = []
        notes = ""
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                notes = text
                continue
            objects += [(path, doc) for doc in yaml.safe_load_all(text) if doc]
        return Rendered(objects, notes)

    return run


def pod_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload and bare pod."""
    specs = [
        (d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in rendered.all("Deployment")
    ]
    specs += [(p["metadata"]["name"], p["spec"]) for p in rendered.all("Pod")]
    return specs


def config_files(rendered: Rendered) -> dict[str, str]:
    """namespace/name -> the service's config.yaml of every ConfigMap that has one."""
    return {
        f"{c['metadata']['namespace']}/{c['metadata']['name']}": c["data"]["config.yaml"]
        for c in rendered.all("ConfigMap")
        if "config.yaml" in c.get("data", {})
    }


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def mock_port() -> Iterator[int]:
    """The embedded mock provider, standing in for every provider of the k8s tests."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "extproc", "mock-provider", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                return True
        except OSError:
            return False

    wait_until(up, 20, "mock provider", process)
    yield port
    process.terminate()
    process.wait(timeout=10)


SECRETS = {
    "llm-provider-keys": {"OPENAI_API_KEY": "sk-pod-openai", "ANTHROPIC_API_KEY": "sk-pod-ant"}
}


def local_values(profile: str | dict[str, Any], mock_port: int | None = None) -> dict[str, Any]:
    """The profile (a ci/ name, or values) with ports free on this machine, and the
    providers replaced by the mock when its port is given."""
    ports = ("http", "readiness", "health", "metrics", "admin", "grpc")
    base = profile_values(profile) if isinstance(profile, str) else profile
    values = deep_merge(base, {"ports": {name: free_port() for name in ports}})
    if mock_port is None:
        return values
    mock = f"http://127.0.0.1:{mock_port}/v1"
    backends = [
        {"name": "openai", "url": mock, "credential": {"env": "OPENAI_API_KEY"}},
        {
            "name": "anthropic",
            "schema": "anthropic",
            "url": mock,
            "credential": {"env": "ANTHROPIC_API_KEY"},
        },
    ]
    return deep_merge(values, {"config": {"backends": backends}})


def config_maps(rendered: Rendered, namespace: str) -> dict[str, dict[str, str]]:
    return {
        c["metadata"]["name"]: c["data"]
        for c in rendered.all("ConfigMap")
        if c["metadata"]["namespace"] == namespace
    }
