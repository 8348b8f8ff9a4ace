from __future__ import annotations

from pathlib import Path

import pytest

from extproc.reload import fingerprint, restart_needed, watched_files
from tests.helpers import BASE_CONFIG, runtime


@pytest.mark.parametrize(
    ("extra", "blocked"),
    [
        ("", []),
        ("\nprices: {models: [{models: ['gpt-*'], input: 1, output: 2}]}\n", []),
        ("\ntelemetry: {tenant_labels: true}\n", ["telemetry"]),
        ("\nservice: {message_timeout: 9s}\n", ["service"]),
        ("\naccounting: {store: {fail_open: true}}\n", ["accounting.store"]),
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
        "Envoy's clusters or routes (backends, fallbacks)"
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
