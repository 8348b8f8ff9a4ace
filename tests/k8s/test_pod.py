"""Pods on one machine: the containers the chart and the injector define, started locally
with their own arguments and the chart's config files; a request through that Envoy
reaches the mock provider."""

from __future__ import annotations

import hashlib
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import anthropic
import openai
import pytest
import yaml

from extproc.control.inject import InjectorConfig
from tests.k8s.conftest import (
    NAMESPACE,
    SECRETS,
    Rendered,
    config_maps,
    deep_merge,
    local_values,
)
from tests.k8s.pod import Pod, image_entrypoint
from tests.k8s.test_injector import fixture, inject


def call_both_sdks(env: dict[str, str], key: str = "unused") -> None:
    """What an app in the pod does: its SDKs read the base URLs the pod gives them."""
    chat = openai.OpenAI(base_url=env["OPENAI_BASE_URL"], api_key=key, max_retries=0)
    raw = chat.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello from the pod"}]
    )
    assert raw.parse().choices[0].message.content == "hello from the pod"
    # The provider got the key from the pod's Secret, not the app's placeholder.
    assert (
        raw.headers["x-mock-authorization-sha256"]
        == hashlib.sha256(b"Bearer sk-pod-openai").hexdigest()
    )
    messages = anthropic.Anthropic(base_url=env["ANTHROPIC_BASE_URL"], api_key=key, max_retries=0)
    reply = messages.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=50,
        messages=[{"role": "user", "content": "and from its other SDK"}],
    )
    assert reply.content[0].text == "and from its other SDK"  # type: ignore[union-attr]


@pytest.mark.parametrize("native", [True, False], ids=["native-sidecars", "containers"])
def test_injected_sidecars_serve_the_pods_sdks(
    native: bool, render: Callable[..., Rendered], mock_port: int, tmp_path: Path
) -> None:
    values = deep_merge(
        local_values("sidecar", mock_port), {"injector": {"nativeSidecars": native}}
    )
    rendered = render(values)
    (injector_map,) = [c for c in rendered.all("ConfigMap") if "injector.yaml" in c["data"]]
    config = InjectorConfig.from_dict(yaml.safe_load(injector_map["data"]["injector.yaml"]))
    document = fixture("review-deployment-pod.json")  # a pod in team-a
    pod_spec = inject(document, config)["spec"]
    sidecars = [
        c
        for c in (pod_spec.get("initContainers", []) + pod_spec["containers"])
        if c["name"] in ("extproc", "extproc-envoy")
    ]
    assert [c["name"] for c in sidecars] == ["extproc", "extproc-envoy"]
    pod = Pod(pod_spec, tmp_path, config_maps(rendered, "team-a"), SECRETS)
    with pod.run(sidecars):
        app = next(c for c in pod_spec["containers"] if c["name"] == "app")
        call_both_sdks({e["name"]: e["value"] for e in app["env"]})
        # The PodMonitor's port serves the service's metrics.
        metrics_port = next(
            p["containerPort"] for p in sidecars[0]["ports"] if p["name"] == "extproc-metrics"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            assert b"gen_ai_client_token_usage" in reply.read()
    # The provider keys never reached a log line.
    assert "sk-pod-" not in pod.logs()


def test_gateway_pod_serves_clients_through_its_service_port(
    render: Callable[..., Rendered], mock_port: int, tmp_path: Path
) -> None:
    # The defaults admit no anonymous caller: a tenant with a gateway key.
    tenant = {"name": "apps", "api_key_sha256": [hashlib.sha256(b"gw-key-apps").hexdigest()]}
    values = deep_merge(local_values("gateway", mock_port), {"config": {"tenants": [tenant]}})
    rendered = render(values)
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    pod = Pod(spec, tmp_path, config_maps(rendered, NAMESPACE), SECRETS)
    with pod.run(spec["containers"]):
        port = values["ports"]["http"]
        env = {
            "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
        }
        with pytest.raises(openai.AuthenticationError):
            call_both_sdks(env)
        call_both_sdks(env, key="gw-key-apps")
        # The preStop hook, as the kubelet would run it in the Envoy container.
        hook = spec["containers"][1]["lifecycle"]["preStop"]["exec"]["command"]
        drained = subprocess.run(
            [*image_entrypoint(), *hook[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert drained.returncode == 0, drained.stderr
        assert "no request active" in drained.stdout
    assert "sk-pod-" not in pod.logs()
