"""Several service processes (service.workers): one supervisor, N forked workers.

Python runs one core per process, so a service that must use more cores runs more
processes. Each worker is a whole service (the ext_proc server, reload, drain) on its own
socket, and Envoy's ext_proc cluster lists every socket as an endpoint and sends each new
stream to the least busy one. An exchange is one stream, so it never spans workers; state
shared between exchanges either lives in Redis (budgets must, when workers > 1) or is a
per-worker cache (the response cache without Redis, drift learning).

The supervisor imports the service and loads the tokenizer before forking (~50 MB that
the workers then share instead of each building its own), serves the Prometheus endpoint
for all workers (prometheus_client's multiprocess mode: every worker writes its values to
files in a private directory, the supervisor adds them up), forwards SIGTERM, SIGINT and
SIGHUP, and exits when the workers have: 0 after a drain, 1 when a worker died on its own
(the orchestrator restarts the whole service rather than run with fewer workers than it
planned for).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from extproc.config.runtime import Runtime
from extproc.telemetry import MULTIPROC_ENV, logging

log = structlog.get_logger("extproc")


def supervise(runtime: Runtime, config_path: Path) -> int:
    """Fork the workers, serve their metrics, pass signals on; the exit status."""
    count = runtime.service.workers
    # Before prometheus_client is imported anywhere: the value class is chosen at import.
    directory = tempfile.mkdtemp(prefix="extproc-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    # Imported and loaded once, shared by the workers' memory until one writes to it.
    from extproc import tokens
    from extproc.control.process import HANDLED

    tokens.preload()
    children: dict[int, int] = {}  # pid -> worker index
    # Signals wait until the supervisor can pass them on (a SIGTERM while forking would
    # otherwise end the supervisor and leave the workers serving).
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            # The signals stay blocked until serve() has its handlers: one that came while
            # the worker started would otherwise end it by the default action (SIGTERM,
            # SIGHUP) or a KeyboardInterrupt (SIGINT) instead of a drain.
            code = 1
            try:
                code = _worker(runtime, config_path, index)
            except BaseException as error:  # the process ends here either way
                log.error("worker_failed", worker=index, error=f"{type(error).__name__}: {error}")
            finally:
                logging.flush()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index
    return _supervise(runtime, children, directory)


def _worker(runtime: Runtime, config_path: Path, index: int) -> int:
    from extproc.control.process import run

    structlog.contextvars.bind_contextvars(worker=index)
    return run(runtime, config_path=config_path, worker=index)


def _supervise(runtime: Runtime, children: dict[int, int], directory: str) -> int:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    from extproc.control.process import HANDLED
    from extproc.telemetry.metrics import serve_registry

    service = runtime.service
    stopping = False

    def forward(signum: int, _: Any) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                os.kill(pid, signum)

    for signum in HANDLED:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    if service.metrics_address != "off":
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        serve_registry(service.metrics_address, registry)
    log.info(
        "supervising",
        workers=len(children),
        pids=sorted(children),
        metrics=service.metrics_address,
        pid=os.getpid(),
    )
    status = 0
    try:
        while children:
            try:
                pid, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            index = children.pop(pid, None)
            if index is None:
                continue
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            code = os.waitstatus_to_exitcode(wait_status)
            if stopping and code == 0:
                continue
            status = 1
            log.error("worker_exited", worker=index, pid=pid, code=code)
            if not stopping:
                # One worker gone: stop the rest, so the orchestrator restarts the service.
                stopping = True
                forward(signal.SIGTERM, None)
    finally:
        deadline = time.monotonic() + 5
        while children and time.monotonic() < deadline:
            for pid in list(children):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        children.pop(pid)
                except ChildProcessError:
                    children.pop(pid)
            time.sleep(0.05)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
    log.info("stopped", workers_status=status)
    return status
