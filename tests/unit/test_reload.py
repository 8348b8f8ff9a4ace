from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from structlog.testing import capture_logs

from extproc.config.loader import ConfigError, load_file
from extproc.config.runtime import Runtime
from extproc.control import reload
from extproc.control.reload import Reloader, fingerprint, restart_needed, watched_files
from extproc.telemetry.metrics import Metrics
from tests.helpers import BASE_CONFIG, issue_certificate, runtime


@pytest.mark.parametrize(
    ("extra", "blocked"),
    [
        ("", []),
        ("\nprices: {models: [{models: ['gpt-*'], input: 1, output: 2}]}\n", []),
        ("\ntelemetry: {tenant_labels: true}\n", ["telemetry"]),
        ("\nservice: {message_timeout: 9s}\n", ["service"]),
        ("\naccounting: {store: {fail_open: true}}\n", ["accounting.store"]),
        ("\nconversations: {max_items: 10}\n", ["conversations"]),
        ("\nlimits: {max_request_bytes: 1000}\n", ["limits"]),
    ],
)
def test_what_a_reload_can_apply(extra: str, blocked: list[str]) -> None:
    assert restart_needed(runtime(), runtime(BASE_CONFIG + extra)) == blocked


def test_new_models_on_existing_backends_apply_but_new_backends_need_envoy() -> None:
    more_models = BASE_CONFIG.replace(
        "tenants:\n", "  - name: extra\n    routes: [{backend: second}]\ntenants:\n", 1
    )
    assert restart_needed(runtime(), runtime(more_models)) == []
    # Fallback chains are Envoy clusters numbered by the model's position: a model put
    # before one with fallbacks renames its cluster.
    shifted = BASE_CONFIG.replace(
        "models:\n", "models:\n  - name: extra\n    routes: [{backend: second}]\n", 1
    )
    assert restart_needed(runtime(), runtime(shifted)) != []
    more_backends = BASE_CONFIG.replace(
        "backends:\n", "backends:\n  - name: third\n    url: http://10.0.0.3/v1\n", 1
    )
    assert restart_needed(runtime(), runtime(more_backends)) == [
        "Envoy's clusters or routes (backends, fallbacks, MCP servers)"
    ]


def test_the_fingerprint_covers_credential_files(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("x")
    (tmp_path / "key").write_text("one")
    loaded = runtime(
        BASE_CONFIG.replace("credential: {env: TEST_OPENAI_KEY}", "credential: {file: key}"),
        base_dir=tmp_path,
    )
    files = watched_files(config, loaded)
    assert files == [config, tmp_path / "key"]
    before = fingerprint(files)
    (tmp_path / "key").write_text("two")
    assert fingerprint(files) != before
    (tmp_path / "key").unlink()
    assert fingerprint(files) not in (before, fingerprint([config]))


NOT_UTF8 = "models: [é]\n".encode("latin-1")


def test_a_config_that_is_not_utf8_is_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(NOT_UTF8)
    with pytest.raises(ConfigError) as raised:
        load_file(path)
    assert raised.value.problems == [f"{path}: not UTF-8 text (byte 9)"]


def test_a_credential_file_that_is_not_utf8_is_a_problem_naming_no_value(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"sk-secret-\xff")
    with pytest.raises(ConfigError) as raised:
        runtime(
            BASE_CONFIG.replace("credential: {env: TEST_OPENAI_KEY}", "credential: {file: key}"),
            base_dir=tmp_path,
        )
    assert raised.value.problems == ['backends[0].credential.file: "key" is not UTF-8 text']


def count(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("extproc_config_reloads_total", {"result": result})
    return value or 0.0


async def until(check: Callable[[], bool]) -> None:
    for _ in range(1000):  # 10 s
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_the_watch_outlives_a_file_that_is_not_utf8_and_applies_the_next_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE_CONFIG)
    applied: list[Runtime] = []
    metrics = Metrics()
    reloader = Reloader(path, load_file(path), applied.append, metrics)
    watch = asyncio.ensure_future(reloader.watch(0.01))
    try:
        with capture_logs() as logs:
            path.write_bytes(NOT_UTF8)
            await until(lambda: count(metrics, "invalid") == 1)
        assert not watch.done() and not applied
        assert metrics.registry.get_sample_value("extproc_config_last_reload_successful") == 0
        [failed] = [entry for entry in logs if entry["event"] == "config_reload_failed"]
        assert failed["problems"] == [f"{path}: not UTF-8 text (byte 9)"]
        path.write_text(BASE_CONFIG.replace("  - name: gone\n", "  - name: gone-too\n"))
        await until(lambda: count(metrics, "applied") == 1)
        assert [m.name for m in applied[0].models if m.name.startswith("gone")] == ["gone-too"]
        assert metrics.registry.get_sample_value("extproc_config_last_reload_successful") == 1
    finally:
        watch.cancel()


async def test_any_failure_to_load_is_an_invalid_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE_CONFIG)
    metrics = Metrics()
    reloader = Reloader(path, load_file(path), lambda _: None, metrics)

    def deep(_: object, **__: object) -> Runtime:
        raise RecursionError("maximum recursion depth exceeded, near sk-secret")

    monkeypatch.setattr(reload, "load_file", deep)
    with capture_logs() as logs:
        assert await reloader.reload("SIGHUP") == "invalid"
    assert count(metrics, "invalid") == 1
    [failed] = [entry for entry in logs if entry["event"] == "config_reload_failed"]
    assert failed["problems"] == [f"{path}: cannot load: RecursionError"]


GRPC_TLS = """
service:
  grpc_address: "127.0.0.1:50051"
  grpc_tls:
    cert_file: service.pem
    key_file: service.key
    client_ca_file: ca.pem
    allowed_peers: [envoy.test]
    envoy_client: {cert_file: envoy.pem, key_file: envoy.key, ca_file: ca.pem}
"""


@pytest.mark.parametrize("rotation", ["half-done", "missing"])
async def test_a_credential_change_applies_while_the_grpc_tls_files_rotate(
    tmp_path: Path, rotation: str
) -> None:
    """The ext_proc port's TLS files are read by the running service on its own (and a
    change to service.grpc_tls needs a restart), so a reload does not read them again: a
    rotation caught half done, or a file briefly gone, does not refuse a credential
    change that lands at the same moment."""
    ca = trustme.CA()
    issue_certificate(ca, tmp_path, "service", ips=("127.0.0.1",))
    issue_certificate(ca, tmp_path, "envoy", dns=("envoy.test",))
    issue_certificate(ca, tmp_path, "next", ips=("127.0.0.1",))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "key").write_text("sk-first")
    path = tmp_path / "gw.yaml"
    path.write_text(
        BASE_CONFIG.replace("credential: {env: TEST_OPENAI_KEY}", "credential: {file: key}")
        + GRPC_TLS
    )
    applied: list[Runtime] = []
    metrics = Metrics()
    reloader = Reloader(path, load_file(path), applied.append, metrics)
    if rotation == "half-done":  # the new certificate, the old key
        (tmp_path / "service.pem").write_bytes((tmp_path / "next.pem").read_bytes())
    else:
        (tmp_path / "service.key").unlink()
    (tmp_path / "key").write_text("sk-second")
    watch = asyncio.ensure_future(reloader.watch(0.01))
    try:
        await until(lambda: count(metrics, "applied") + count(metrics, "invalid") > 0)
    finally:
        watch.cancel()
    assert count(metrics, "invalid") == 0
    (new,) = applied
    assert new.backends["openai"].credential_value() == "Bearer sk-second"
    # A change to the TLS settings themselves still needs a restart.
    path.write_text(path.read_text().replace("allowed_peers: [envoy.test]", "allowed_peers: [x]"))
    assert await reloader.reload("SIGHUP") == "restart_required"
