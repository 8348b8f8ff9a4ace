"""Config reload: on SIGHUP, and when the config file or a credential file it names
changes. A valid change applies to exchanges that start after it (those in flight keep
the config they started with); an invalid one, or one only a restart can apply, is
refused and the running config keeps serving. Every attempt is logged and counted.
Files only a start reads (TLS files, CA bundles) are neither watched nor read again:
their sections are compared instead (see load_file's start_files)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import structlog

from extproc.config.loader import ConfigError, load_file
from extproc.config.runtime import Runtime
from extproc.control.render import render
from extproc.telemetry.metrics import Metrics

log = structlog.get_logger("extproc")

# Read once at start-up: sockets, servers, stores, sinks and metric labels (the config's
# section, and the runtime's attribute holding it).
RESTART_FIELDS = {
    "listener": "listener",
    "service": "service",
    "admin": "admin",
    "limits": "max_request_bytes",
    "cache": "cache",
    "conversations": "conversations",
    "mcp": "mcp",
    "capture": "capture",
    "schema_drift": "schema_drift",
    "telemetry": "telemetry",
    "accounting.store": "store",
}


def restart_needed(old: Runtime, new: Runtime) -> list[str]:
    """The parts of a new config that the running processes cannot take on."""
    changed = [
        section
        for section, name in RESTART_FIELDS.items()
        if getattr(old, name) != getattr(new, name)
    ]
    if not changed and render(old) != render(new):
        # Envoy's bootstrap is static: new backends or fallback chains need new clusters.
        changed.append("Envoy's clusters or routes (backends, fallbacks, MCP servers)")
    return changed


def watched_files(path: Path, runtime: Runtime) -> list[Path]:
    """The config file and the credential files it names (Secrets rotate them)."""
    upstreams = [*runtime.backends.values(), *runtime.mcp_servers.values()]
    return [path] + [
        Path(upstream.credential_file)
        for upstream in upstreams
        if upstream.credential_file is not None
    ]


def fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        try:
            digest.update(file.read_bytes())
        except OSError:
            digest.update(b"\0missing")
        digest.update(b"\0")
    return digest.hexdigest()


class Reloader:
    def __init__(
        self,
        path: Path,
        runtime: Runtime,
        apply: Callable[[Runtime], None],
        metrics: Metrics,
    ) -> None:
        self.path = path
        self.runtime = runtime
        self.apply = apply
        self.metrics = metrics
        self.lock = asyncio.Lock()
        self.seen = fingerprint(watched_files(path, runtime))
        metrics.config_last_reload_successful.set(1)

    async def reload(self, trigger: str) -> str:
        """Load and apply the config; returns the result counted in the metric."""
        async with self.lock:
            self.seen = await asyncio.to_thread(fingerprint, watched_files(self.path, self.runtime))
            try:
                new = await asyncio.to_thread(load_file, self.path, start_files=False)
                blocked = await asyncio.to_thread(restart_needed, self.runtime, new)
            except ConfigError as error:
                return self._refused(trigger, "invalid", error.problems)
            except Exception as error:
                # Any failure to load is an invalid config. Its type only: a message may
                # quote what the file holds.
                problem = f"{self.path}: cannot load: {type(error).__name__}"
                return self._refused(trigger, "invalid", [problem])
            if blocked:
                return self._refused(
                    trigger, "restart_required", [f"{part}: changed" for part in blocked]
                )
            self.runtime = new
            self.apply(new)
            self.seen = await asyncio.to_thread(fingerprint, watched_files(self.path, new))
            self.metrics.config_reloads.labels("applied").inc()
            self.metrics.config_last_reload_successful.set(1)
            log.info(
                "config_reloaded",
                trigger=trigger,
                models=len(new.models),
                backends=len(new.backends),
                tenants=len(new.tenants),
            )
            return "applied"

    def _refused(self, trigger: str, result: str, problems: list[str]) -> str:
        self.metrics.config_reloads.labels(result).inc()
        self.metrics.config_last_reload_successful.set(0)
        # Problems name fields and reasons, never values (the loader's contract).
        log.error("config_reload_failed", trigger=trigger, result=result, problems=problems)
        return result

    async def watch(self, interval: float) -> None:
        """Poll the watched files; reload when their content changes. Nothing a file holds
        ends the watch: a reload that fails is refused (logged and counted) and the next
        change is picked up as usual."""
        failing = ""  # the error of the checks failing in a row, logged once
        while True:
            await asyncio.sleep(interval)
            try:
                current = await asyncio.to_thread(
                    fingerprint, watched_files(self.path, self.runtime)
                )
                if current != self.seen:
                    await self.reload("file")
                failing = ""
            except Exception as error:
                if type(error).__name__ != failing:
                    failing = type(error).__name__
                    log.error("config_watch_failed", error=failing)
