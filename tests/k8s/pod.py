"""A pod on one machine: the containers of a rendered or injected pod spec, started as
local processes with their own arguments, environment and mounted files.

Mounts are simulated by giving each volume a directory and replacing its mount path in
the arguments and in the mounted files; the pod's network namespace is this machine's
loopback (addresses 0.0.0.0 in mounted config files are narrowed to 127.0.0.1, since tests
listen on loopback only). Containers start in the order the kubelet uses, each after the
previous one passes its startup probe.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extproc.control.stack import grpc_serving, wait_until
from tests.helpers import ROOT


def image_entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT (exec form), with `extproc` from this environment."""
    text = (ROOT / "k8s" / "Dockerfile").read_text()
    found = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert len(found) == 1, "one exec-form ENTRYPOINT"
    entrypoint: list[str] = json.loads(found[0])
    assert entrypoint[0] == "extproc"
    return [str(Path(sys.executable).parent / "extproc"), *entrypoint[1:]]


def probe_passes(probe: dict[str, Any]) -> bool:
    try:
        if "grpc" in probe:
            return grpc_serving(f"127.0.0.1:{probe['grpc']['port']}")
        get = probe["httpGet"]
        url = f"http://127.0.0.1:{get['port']}{get['path']}"
        with urllib.request.urlopen(url, timeout=1) as reply:
            return 200 <= reply.status < 400
    except Exception:
        return False


@dataclass
class Pod:
    spec: dict[str, Any]
    workdir: Path
    config_maps: dict[str, dict[str, str]]  # name -> files
    secrets: dict[str, dict[str, str]]  # name -> keys
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)
    running: list[dict[str, Any]] = field(default_factory=list)

    def _volume(self, name: str) -> Path:
        if name not in self.volumes:
            (volume,) = [v for v in self.spec["volumes"] if v["name"] == name]
            path = self.workdir / "volumes" / name
            path.mkdir(parents=True)
            self.volumes[name] = path
            if "configMap" in volume:
                files = self.config_maps[volume["configMap"]["name"]]
                for file, text in files.items():
                    (path / file).write_text(self._localise(text))
            if "secret" in volume:
                data = self.secrets[volume["secret"]["secretName"]]
                items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    (path / item["path"]).write_text(data[item["key"]])
        return self.volumes[name]

    def _mounts(self, container: dict[str, Any]) -> dict[str, Path]:
        return {m["mountPath"]: self._volume(m["name"]) for m in container["volumeMounts"]}

    def _localise(self, text: str) -> str:
        mounts = {m["mountPath"]: m["name"] for c in self.running for m in c["volumeMounts"]}
        # Longest first: /etc/extproc must not replace the start of /etc/extproc-grpc-tls.
        for path in sorted(mounts, key=len, reverse=True):
            text = text.replace(path, str(self.workdir / "volumes" / mounts[path]))
        return text.replace("0.0.0.0:", "127.0.0.1:")

    def start(self, containers: list[dict[str, Any]]) -> None:
        self.running = containers
        for container in containers:
            self._mounts(container)  # create every volume before any container starts
        for container in containers:
            argv = image_entrypoint() + [self._localise(a) for a in container["args"]]
            env = {**os.environ}
            for source in container.get("envFrom", []):
                env.update(self.secrets[source["secretRef"]["name"]])
            for variable in container.get("env", []):
                env[variable["name"]] = variable["value"]
            log = (self.workdir / f"{container['name']}.log").open("wb")
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
            log.close()
            self.processes[container["name"]] = process
            probe = container.get("startupProbe") or container["readinessProbe"]
            wait_until(lambda p=probe: probe_passes(p), 30, container["name"], process)

    @contextlib.contextmanager
    def run(self, containers: list[dict[str, Any]]) -> Iterator[Pod]:
        """Start the containers; on the way out stop them (showing their logs on failure)."""
        try:
            self.start(containers)
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            self.stop()

    def logs(self) -> str:
        return "\n".join(
            f"== {name}\n{(self.workdir / f'{name}.log').read_text(errors='replace')}"
            for name in self.processes
        )

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
