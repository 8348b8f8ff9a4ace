"""One service process: the data plane's Service under signals (SIGTERM and SIGINT drain
it) and config reload (SIGHUP, and changes of the config's files). `extproc serve` runs
one, or the supervisor forks several (supervisor.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import structlog
import uvloop

from extproc import compiled, tokens
from extproc.config.runtime import Runtime
from extproc.control.reload import Reloader
from extproc.dataplane.service import Service
from extproc.policy import engine
from extproc.telemetry import MULTIPROC_ENV
from extproc.telemetry.metrics import Metrics

log = structlog.get_logger("extproc")

# The signals a service process handles. The supervisor passes them on to its workers, and
# blocks them while it forks: a worker unblocks them once its handlers are in place.
HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def run(runtime: Runtime, *, config_path: Path, worker: int | None = None) -> int:
    """serve() on uvloop: a stream's messages mostly arrive one per wake-up (SSE events
    come paced), and its loop costs less per wake-up than asyncio's own
    (docs/decisions/uvloop.md)."""
    check_hash_seed()
    return uvloop.run(serve(runtime, config_path=config_path, worker=worker))


def check_hash_seed() -> None:
    """The memos of long texts (their token counts, what the policies found in them) know
    a text by its length and its hash: safe while the hash's key is a secret of the
    process. With PYTHONHASHSEED set, anyone who knows it could write a text that passes
    for one the policies read before, so the memos stay empty."""
    if os.environ.get("PYTHONHASHSEED", "random") != "random":
        tokens.MEMO.entries = engine.READ.entries = 0
        log.warning("text_memos_off", reason="PYTHONHASHSEED is set")


async def serve(runtime: Runtime, *, config_path: Path, worker: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then drain within the configured grace period;
    reload the config on SIGHUP and when it changes. A worker (service.workers > 1) leaves
    metrics to the supervisor."""
    metrics = Metrics(tenant_labels=runtime.telemetry.tenant_labels)
    if worker is None and MULTIPROC_ENV not in os.environ:
        metrics.defer()  # this loop alone observes; a scrape has it add what it counted
    service = Service(runtime, metrics, worker=worker)
    await service.start()
    settings = runtime.service
    if settings.metrics_address != "off" and worker is None:
        metrics.serve(settings.metrics_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloader = Reloader(config_path, runtime, service.apply, metrics)
    reloads: set[asyncio.Task[str]] = set()

    def on_sighup() -> None:
        task = asyncio.ensure_future(reloader.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    watching: asyncio.Task[None] | None = None
    if settings.config_check_interval > 0:
        watching = asyncio.ensure_future(reloader.watch(settings.config_check_interval))
    # A worker starts with these blocked (see supervisor.supervise); one that came
    # meanwhile is delivered now, to the handlers above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    log.info(
        "serving",
        grpc=service.address,
        grpc_tls=settings.grpc_tls is not None,
        metrics=settings.metrics_address,
        models=len(runtime.models),
        backends=len(runtime.backends),
        pid=os.getpid(),
        code=compiled.STATE,
    )
    await stop.wait()
    if watching is not None:
        watching.cancel()
    await service.stop()
    return 0
