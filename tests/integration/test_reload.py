"""Config reload through a running gateway: a changed file and SIGHUP apply a valid config
to new requests without dropping those in flight; an invalid config, or one only a
restart can apply, is refused, logged and counted while the old config keeps serving."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.conftest import PORTS, Gateway, start_gateway

BASE = (
    PORTS
    + """  config_check_interval: {interval}
backends:
  - name: openai
    url: http://127.0.0.1:{mock_port}/v1
    credential: {{file: key.txt}}
models:
  - name: gpt-4o-mini
    routes: [{{backend: openai}}]
tenants: [{{name: anyone}}]
auth: {{anonymous_tenant: anyone}}
"""
)
NEW_MODEL = """  - name: gpt-4o-reloaded
    routes: [{{backend: openai, upstream_model: reloaded-upstream}}]
"""
NEW_BACKEND = """  - name: elsewhere
    url: http://127.0.0.1:{mock_port}/elsewhere/v1
"""


def start(workdir: Path, interval: str) -> Gateway:
    workdir.mkdir(parents=True)
    (workdir / "key.txt").write_text("sk-reload-first\n")
    return start_gateway(workdir, BASE, interval=interval)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    gateway = start(tmp_path_factory.mktemp("reload") / "watched", "0.2s")
    yield gateway, gateway.stack.workdir / "gateway.yaml"
    gateway.stack.stop()


def metric(gateway: Gateway, line: str) -> float | None:
    for row in httpx.get(gateway.metrics_url, timeout=5).text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return None


def ask(gateway: Gateway, model: str) -> openai.types.chat.ChatCompletion:
    return gateway.openai(key="none").chat.completions.create(
        model=model, messages=[{"role": "user", "content": "still there?"}]
    )


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def model_served(gateway: Gateway, model: str) -> bool:
    try:
        ask(gateway, model)
        return True
    except openai.NotFoundError:
        return False


def replace(path: Path, text: str) -> None:
    """As Kubernetes updates a mounted ConfigMap: a new file renamed into place."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    staged.replace(path)


def test_a_changed_file_applies_to_new_requests_and_spares_those_in_flight(
    watched: tuple[Gateway, Path],
) -> None:
    gateway, config = watched
    original = config.read_text()
    assert not model_served(gateway, "gpt-4o-reloaded")
    # A stream in flight across the reload: 9 events, 400 ms apart.
    chunks: list[str] = []
    client = gateway.openai(key="none", default_headers={"x-mock-chunk-delay-ms": "400"})

    def stream() -> None:
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini",
            stream=True,
            messages=[{"role": "user", "content": "one two three four five six seven eight"}],
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                chunks.append(chunk.choices[0].delta.content)

    reader = threading.Thread(target=stream)
    reader.start()
    time.sleep(0.3)
    replace(config, original.replace("models:\n", "models:\n" + NEW_MODEL.format(), 1))
    wait_for(lambda: model_served(gateway, "gpt-4o-reloaded"))
    assert reader.is_alive()  # the reload happened while the stream was running
    reader.join(timeout=20)
    assert "".join(chunks) == "one two three four five six seven eight"
    gateway.wait_for_log('"event":"config_reloaded"')
    assert metric(gateway, 'extproc_config_reloads_total{result="applied"}') == 1
    assert metric(gateway, "extproc_config_last_reload_successful") == 1
    replace(config, original)
    wait_for(lambda: not model_served(gateway, "gpt-4o-reloaded"))


def test_an_invalid_file_is_refused_and_the_old_config_keeps_serving(
    watched: tuple[Gateway, Path],
) -> None:
    gateway, config = watched
    original = config.read_text()
    before = metric(gateway, 'extproc_config_reloads_total{result="invalid"}') or 0
    replace(config, original.replace("routes: [{backend: openai}]", "routes: [{backend: opnai}]"))
    wait_for(
        lambda: metric(gateway, 'extproc_config_reloads_total{result="invalid"}') == before + 1
    )
    assert metric(gateway, "extproc_config_last_reload_successful") == 0
    log = gateway.wait_for_log('no backend named \\"opnai\\"')
    assert '"event":"config_reload_failed"' in log
    assert ask(gateway, "gpt-4o-mini").choices[0].message.content == "still there?"
    # Broken YAML too.
    replace(config, original + "models: [\n")
    wait_for(
        lambda: metric(gateway, 'extproc_config_reloads_total{result="invalid"}') == before + 2
    )
    assert ask(gateway, "gpt-4o-mini").choices[0].message.content == "still there?"
    replace(config, original)
    wait_for(lambda: metric(gateway, "extproc_config_last_reload_successful") == 1)


def test_files_that_are_not_utf8_are_refused_and_the_watch_goes_on(
    watched: tuple[Gateway, Path],
) -> None:
    gateway, config = watched
    original = config.read_text()
    key = config.parent / "key.txt"
    before = metric(gateway, 'extproc_config_reloads_total{result="invalid"}') or 0
    config.with_suffix(".new").write_bytes(original.encode() + b"# caf\xe9\n")
    config.with_suffix(".new").replace(config)
    wait_for(
        lambda: metric(gateway, 'extproc_config_reloads_total{result="invalid"}') == before + 1
    )
    gateway.wait_for_log("not UTF-8 text")
    replace(config, original)
    wait_for(lambda: metric(gateway, "extproc_config_last_reload_successful") == 1)
    key.write_bytes(b"sk-reload-\xff\n")
    wait_for(
        lambda: metric(gateway, 'extproc_config_reloads_total{result="invalid"}') == before + 2
    )
    gateway.wait_for_log('\\"key.txt\\" is not UTF-8 text')
    assert ask(gateway, "gpt-4o-mini").choices[0].message.content == "still there?"
    key.write_text("sk-reload-first\n")
    wait_for(lambda: metric(gateway, "extproc_config_last_reload_successful") == 1)
    # The watch is still on: a later change applies.
    replace(config, original.replace("models:\n", "models:\n" + NEW_MODEL.format(), 1))
    wait_for(lambda: model_served(gateway, "gpt-4o-reloaded"))
    replace(config, original)
    wait_for(lambda: not model_served(gateway, "gpt-4o-reloaded"))


def test_a_change_envoy_would_need_is_refused(watched: tuple[Gateway, Path]) -> None:
    gateway, config = watched
    original = config.read_text()
    mock_port = gateway.mock_port
    replace(
        config,
        original.replace("backends:\n", "backends:\n" + NEW_BACKEND.format(mock_port=mock_port), 1),
    )
    wait_for(
        lambda: (
            (metric(gateway, 'extproc_config_reloads_total{result="restart_required"}') or 0) >= 1
        )
    )
    log = gateway.wait_for_log("Envoy's clusters or routes")
    assert '"result":"restart_required"' in log
    assert ask(gateway, "gpt-4o-mini").choices[0].message.content == "still there?"
    replace(config, original)
    wait_for(lambda: metric(gateway, "extproc_config_last_reload_successful") == 1)


def test_sighup_reloads_now_including_a_rotated_credential_file(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gateway = start(tmp_path_factory.mktemp("reload") / "sighup", "0s")
    try:
        workdir = gateway.stack.workdir

        def key_seen() -> str:
            raw = gateway.openai(key="none").chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "key?"}]
            )
            return raw.headers["x-mock-authorization-sha256"]

        def digest(key: str) -> str:
            return hashlib.sha256(f"Bearer {key}".encode()).hexdigest()

        assert key_seen() == digest("sk-reload-first")
        replace(workdir / "key.txt", "sk-reload-second\n")
        time.sleep(0.5)
        assert key_seen() == digest("sk-reload-first")  # no polling: nothing yet
        gateway.stack.processes["service"].send_signal(signal.SIGHUP)
        wait_for(lambda: key_seen() == digest("sk-reload-second"))
        assert '"trigger":"SIGHUP"' in gateway.service_log()
    finally:
        gateway.stack.stop()
    log = (gateway.stack.workdir / "service.log").read_text()
    assert "sk-reload-" not in log
