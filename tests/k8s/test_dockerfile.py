"""The image: multi-stage, non-root, no build tools where it runs, and an entrypoint that is
the `extproc` command the rest of the suite runs. (No container engine runs here: the
entrypoint and default command are run directly.)"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from extproc.control.cli import build_parser
from extproc.control.inject import InjectorConfig, sidecars
from extproc.control.stack import free_port, grpc_serving, wait_until
from tests.helpers import BASE_CONFIG, ROOT
from tests.k8s.conftest import PROFILES, Rendered, pod_specs, profile_values
from tests.k8s.pod import image_entrypoint

DOCKERFILE = ROOT / "k8s" / "Dockerfile"


def stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def instruction(stage: list[str], name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.split(None, 1)[0].upper() == name]


def test_multi_stage_build_copies_only_the_environment() -> None:
    build, final = stages()
    assert instruction(build, "FROM")[0].endswith(" AS build")
    assert instruction(final, "COPY") == ["--from=build /opt/extproc /opt/extproc"]
    assert any("pip install" in run for run in instruction(build, "RUN"))


def test_final_stage_runs_as_a_numeric_non_root_user_without_build_tools() -> None:
    final = stages()[-1]
    (user,) = instruction(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    runs = " ".join(instruction(final, "RUN"))
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in runs
    assert "pip uninstall" in runs  # not even pip is left to install things with
    assert instruction(final, "USER") and final.index(f"USER {user}") > max(
        i for i, line in enumerate(final) if line.startswith(("RUN", "COPY"))
    )


def test_context_sends_the_package_and_nothing_else() -> None:
    ignore = [
        line.strip()
        for line in (ROOT / "k8s" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    kept = {line[1:] for line in ignore if line.startswith("!")}
    copied = {part for line in instruction(stages()[0], "COPY") for part in line.split()[:-1]}
    assert {c.rstrip("/") for c in copied} <= {k.removesuffix("/**") for k in kept}


def test_default_command_serves(tmp_path: Path) -> None:
    """ENTRYPOINT + CMD, with the config file where the chart mounts it."""
    (cmd,) = instruction(stages()[-1], "CMD")
    argv = image_entrypoint() + json.loads(cmd)
    assert argv[-1] == "/etc/extproc/config.yaml"
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "etc" / "extproc" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        BASE_CONFIG + f"\nservice: {{grpc_address: '{address}', metrics_address: 'off'}}\n"
    )
    argv[-1] = str(config)
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"TEST_OPENAI_KEY": "sk-a", "TEST_ANTHROPIC_KEY": "sk-b", "PATH": "/usr/bin:/bin"},
    )
    try:
        wait_until(lambda: grpc_serving(address), 30, "service", process)
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0


def subcommands() -> set[str]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return set(action.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_container_runs_an_extproc_subcommand(
    profile: str, render: Callable[..., Rendered]
) -> None:
    containers = [
        c for _, spec in pod_specs(render(profile_values(profile))) for c in spec["containers"]
    ]
    config = InjectorConfig(namespace="x", image="i", native_sidecars=False)
    containers += sidecars(config, secret="")
    for container in containers:
        assert "command" not in container, container["name"]  # the image's entrypoint
        assert container["args"][0] in subcommands(), container["args"]
        for hook in container.get("lifecycle", {}).values():
            command = hook["exec"]["command"]
            assert command[0] == "extproc" and command[1] in subcommands(), command
