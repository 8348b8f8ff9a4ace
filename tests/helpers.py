"""Shared test helpers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from extproc.config import Runtime, load_text
from extproc.stack import grpc_serving, wait_until

ROOT = Path(__file__).resolve().parent.parent


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


BASE_CONFIG = """
backends:
  - name: openai
    url: https://api.openai.test/v1
    credential: {env: TEST_OPENAI_KEY}
  - name: second
    url: http://10.0.0.2:8000/v1
    headers: {x-extra: "1"}
  - name: anthropic
    schema: anthropic
    url: https://api.anthropic.test/v1
    credential: {env: TEST_ANTHROPIC_KEY}
models:
  - name: gpt-4o-mini
    aliases: [mini]
    routes: [{backend: openai}]
  - name: gpt-4o
    routes: [{backend: openai, upstream_model: gpt-4o-2024-08-06}]
  - name: split
    routes:
      - {backend: openai, weight: 3, upstream_model: split-a}
      - {backend: second, weight: 1, upstream_model: split-b}
  - name: claude-*
    routes: [{backend: anthropic}]
  - name: resilient
    routes: [{backend: openai, upstream_model: first}]
    fallbacks: [{backend: second, upstream_model: second}, {backend: anthropic}]
  - name: old
    routes: [{backend: openai}]
    deprecation: {deprecated_at: "2026-01-01", sunset: "2026-06-30", replacement: gpt-4o-mini}
  - name: gone
    routes: [{backend: openai}]
    deprecation: {sunset: "2026-06-30", replacement: gpt-4o}
  - name: moved
    routes: [{backend: openai}]
    deprecation: {sunset: "2026-06-30", replacement: gpt-4o, after_sunset: reroute}
tenants:
  - name: team-a
    api_key_sha256: ["%(key_a)s"]
    models: ["gpt-*", "split", "resilient", "old", "gone", "moved"]
  - name: team-b
    api_key_sha256: ["%(key_b)s"]
    spiffe_ids: ["spiffe://test/ns/b/sa/app"]
    models: ["claude-*"]
  - name: public
    models: ["gpt-4o-mini"]
auth:
  anonymous_tenant: public
""".replace("%(key_a)s", sha256("key-a")).replace("%(key_b)s", sha256("key-b"))


def runtime(text: str = BASE_CONFIG, **kwargs: object) -> Runtime:
    return load_text(textwrap.dedent(text), **kwargs)  # type: ignore[arg-type]


MINIMAL_WITH_ANONYMOUS = """
backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
models: [{name: m, routes: [{backend: b}]}]
tenants: [{name: everyone}]
auth: {anonymous_tenant: everyone}
"""


def start_service(
    config: Path, address: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`extproc serve CONFIG` as its own process, once its gRPC health says SERVING."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "extproc", "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
    try:
        wait_until(lambda: grpc_serving(address), 20, "service", process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process
