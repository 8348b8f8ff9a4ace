from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from extproc.cli import main
from extproc.config import ConfigError, load_file, load_text
from extproc.config.runtime import Schema, Secret
from extproc.glob import Glob
from tests.helpers import BASE_CONFIG, ROOT, runtime

MINIMAL = """
backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
models: [{name: m, routes: [{backend: b}]}]
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(textwrap.dedent(text))
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "backends: [{name: openai, url: 'http://x/v1'}]\nmodels: [{name: m, routes: [{backend: opnai}]}]",
            'models[0].routes[0].backend: no backend named "opnai"',
        ),
        (
            "backends: [{name: b, url: 'http://x/v1'}]\nmodels: [{name: m, routes: [{backend: b, weight: 0}]}]",
            "models[0].routes[0].weight: must be positive",
        ),
        (
            "backends: [{name: b, url: 'http://x/v1'}]\nmodels: [{name: m, routes: [{backend: b, weight: -1}]}]",
            "models[0].routes[0].weight: -1 is out of range",
        ),
        (
            "backends: [{name: b, url: 'http://x/v1'}]\nmodels: [{name: m, routes: [{backend: b, weight: ten}]}]",
            'models[0].routes[0].weight: expected an integer, got "ten"',
        ),
        (
            "backends: [{name: b, url: 'http://x/v1', colour: red}]",
            "backends[0].colour: unknown field",
        ),
        (
            "backends: [{name: b, url: 'ftp://x'}]",
            'backends[0].url: expected an http:// or https:// URL, got "ftp://x"',
        ),
        (
            "backends: [{name: b, url: 'http://x/v1', schema: grpc}]",
            "backends[0].schema: expected one of openai, anthropic",
        ),
        (
            "backends: [{name: b, url: 'http://x'}, {name: b, url: 'http://y'}]",
            'backends[1].name: duplicate backend name "b"',
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m, routes: [{backend: b}]}, {name: n, aliases: [m], routes: [{backend: b}]}]",
            'models[1].aliases[0]: "m" is already defined at models[0].name',
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m}]",
            "models[0].routes: at least one route is required",
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m, routes: [{backend: b}], retry_on: [sometimes]}]",
            'models[0].retry_on[0]: "sometimes" is not one of',
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: 'has space', routes: [{backend: b}]}]",
            'models[0].name: "has space" is not a valid model name',
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m, routes: [{backend: b}], deprecation: {sunset: 2026-13-01}}]",
            'models[0].deprecation.sunset: "2026-13-01" is not an RFC 3339 date or timestamp',
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m, routes: [{backend: b}], deprecation: {sunset: 2026-01-01, after_sunset: reroute}}]",
            "models[0].deprecation.replacement: required when after_sunset is reroute",
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m, routes: [{backend: b}], deprecation: {sunset: 2026-01-01, replacement: nope}}]",
            'models[0].deprecation.replacement: no model named "nope"',
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels:\n"
            "- {name: m, routes: [{backend: b}], deprecation: {sunset: 2026-01-01, replacement: n, after_sunset: reroute}}\n"
            "- {name: n, routes: [{backend: b}], deprecation: {sunset: 2026-01-01, replacement: m, after_sunset: reroute}}",
            "models[0].deprecation.replacement: reroutes in a cycle: m -> n -> m",
        ),
        (
            "tenants: [{name: t, api_key_sha256: [abc]}]",
            "tenants[0].api_key_sha256[0]: expected 64 hex digits",
        ),
        (
            "tenants: [{name: t, spiffe_ids: [not-spiffe]}]",
            'tenants[0].spiffe_ids[0]: must start with "spiffe://"',
        ),
        ("auth: {anonymous_tenant: ghost}", 'auth.anonymous_tenant: no tenant named "ghost"'),
        (
            "service: {grpc_address: nowhere}",
            'service.grpc_address: expected "unix:///path" or "host:port"',
        ),
        (
            "service: {health_address: 'unix:///run/h.sock'}",
            'service.health_address: expected "host:port"',
        ),
        (
            "admin: {readiness_address: '10001'}",
            'admin.readiness_address: expected "host:port"',
        ),
        (
            "service: {message_timeout: soon}",
            'service.message_timeout: expected a duration such as "2s"',
        ),
        (
            "listener: {tls: {cert_file: /nonexistent.pem}}",
            "listener.tls.key_file: required when tls is set",
        ),
        (
            "backends: [{name: b, url: 'http://x', tls: {sni: x}}]",
            "backends[0].tls: only applies to https URLs",
        ),
        (
            "backends: [{name: b, url: 'http://x', credential: {env: A, file: B}}]",
            "backends[0].credential.file: only one of",
        ),
        (
            "backends: [{name: b, url: 'http://x', headers: {host: evil}}]",
            "backends[0].headers.host: not a header the gateway can set",
        ),
        ("models: 3", "models: expected a list, got 3"),
        (
            "auth: {client_credential_headers: [authorization, x-api-key, api-key]}",
            "auth.client_credential_headers: must include x-goog-api-key: the gateway reads",
        ),
        (
            "auth: {client_credential_headers: [authorization, x-api-key, api-key,"
            " x-goog-api-key, 'bad header']}",
            'auth.client_credential_headers[4]: "bad header" is not a header',
        ),
        (
            "auth: {client_credential_headers: [authorization, x-api-key, api-key,"
            " x-goog-api-key, Host]}",
            'auth.client_credential_headers[4]: "Host" is not a header',
        ),
        (
            "auth: {client_credential_headers: [authorization, X-Api-Key, api-key,"
            " x-goog-api-key, x-api-key]}",
            'auth.client_credential_headers[4]: "x-api-key" is listed twice',
        ),
        (
            "auth: {client_credential_query_params: ['key&x']}",
            'auth.client_credential_query_params[0]: "key&x" is not a plain query parameter',
        ),
    ],
)
def test_every_problem_names_its_field(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    problems = problems_of(
        """
        backends: [{name: b, url: 'ftp://x'}]
        models: [{name: m, routes: [{backend: nope}]}]
        tenants: [{name: t, api_key_sha256: [zz]}]
        """
    )
    assert len(problems) == 3


def test_defaults_are_written_into_the_config() -> None:
    source = load_text(MINIMAL).source
    assert (source.listener.address, source.listener.port) == ("127.0.0.1", 10000)
    assert (source.admin.address, source.admin.port) == ("127.0.0.1", 9901)
    assert source.service.grpc_address == "127.0.0.1:50051"
    assert source.service.message_timeout.ToNanoseconds() == 2_000_000_000
    assert source.listener.request_timeout.seconds == 300
    assert source.limits.max_request_bytes == 32 * 1024 * 1024
    assert list(source.models[0].retry_on) == ["connect-failure", "reset", "5xx", "429"]


def test_client_credentials_default_to_every_sdks_headers_and_googles_query_key() -> None:
    loaded = load_text(MINIMAL)
    assert loaded.client_credential_headers == (
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "proxy-authorization",
    )
    assert list(loaded.source.auth.client_credential_headers) == list(
        loaded.client_credential_headers
    )
    assert loaded.client_credential_query_params == {"key"}
    # A list given replaces the default; names are compared in lower case.
    custom = load_text(
        MINIMAL + "auth: {client_credential_headers: [Authorization, x-api-key, api-key, "
        "x-goog-api-key, x-portkey-api-key], client_credential_query_params: [key, API_KEY]}"
    )
    assert custom.client_credential_headers[-1] == "x-portkey-api-key"
    assert "proxy-authorization" not in custom.client_credential_headers
    assert custom.client_credential_query_params == {"key", "api_key"}


def test_enums_are_case_insensitive_and_durations_parse() -> None:
    loaded = load_text(
        """
        service: {message_timeout: 250ms, shutdown_grace: 1.5m}
        backends: [{name: b, schema: Anthropic, url: "http://x/v1"}]
        """
    )
    assert loaded.backends["b"].schema is Schema.ANTHROPIC
    assert loaded.source.service.message_timeout.ToNanoseconds() == 250_000_000
    assert loaded.source.service.shutdown_grace.seconds == 90


def test_backend_url_is_split_into_cluster_parts() -> None:
    loaded = runtime()
    openai = loaded.backends["openai"]
    assert (openai.scheme, openai.host, openai.port, openai.base_path) == (
        "https",
        "api.openai.test",
        443,
        "/v1",
    )
    assert openai.sni == "api.openai.test" and openai.tls
    second = loaded.backends["second"]
    assert (second.host, second.port, second.tls) == ("10.0.0.2", 8000, False)


def test_credentials_come_from_env_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key.txt").write_text("  sk-from-file\n")
    (tmp_path / "gw.yaml").write_text(
        """
backends:
  - {name: a, url: "http://x/v1", credential: {env: MY_KEY}}
  - {name: b, schema: anthropic, url: "http://x/v1", credential: {file: key.txt}}
  - {name: c, url: "http://x/v1", credential: {env: MY_KEY, header: api-key}}
"""
    )
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    loaded = load_file(tmp_path / "gw.yaml")
    assert loaded.backends["a"].credential_header == "authorization"
    assert loaded.backends["a"].credential_value() == "Bearer sk-from-env"
    assert loaded.backends["b"].credential_header == "x-api-key"
    assert loaded.backends["b"].credential_value() == "sk-from-file"
    assert loaded.backends["c"].credential_value() == "sk-from-env"


def test_missing_secret_is_an_error_unless_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_OPENAI_KEY")
    with pytest.raises(ConfigError) as caught:
        runtime()
    assert caught.value.problems == [
        'backends[0].credential.env: environment variable "TEST_OPENAI_KEY" is not set'
    ]
    # Skipped (render-envoy, check-config): the backend keeps its header, with no value.
    backend = runtime(resolve_secrets=False).backends["openai"]
    assert backend.credential_header == "authorization"
    assert backend.credential is not None and backend.credential.reveal() == ""


def test_secrets_never_show_in_reprs() -> None:
    backend = runtime().backends["openai"]
    assert "sk-test-openai" not in repr(backend)
    assert "sk-test-openai" not in str(Secret("sk-test-openai"))


def test_shipped_examples_are_valid() -> None:
    paths = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(paths) >= 2  # demo and sidecar at least
    for path in paths:
        loaded = load_file(path, resolve_secrets=False)
        assert loaded.models and loaded.backends, path.name
        targets = {t.backend.name for m in loaded.models for r in m.routes for t in r.attempts}
        assert targets <= set(loaded.backends), path.name


def test_check_config_exits_non_zero_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "backends: [{name: openai, url: 'http://x/v1'}]\nmodels: [{name: m, routes: [{backend: opnai}]}]\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["check-config", str(bad)])
    assert exit_info.value.code == 1
    assert 'models[0].routes[0].backend: no backend named "opnai"' in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(BASE_CONFIG)
    assert main(["check-config", str(good)]) == 0


def test_check_config_reports_yaml_syntax_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(SystemExit):
        main(["check-config", str(bad)])
    assert "line 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("claude-*", "claude-3-haiku", True),
        ("claude-*", "claude-", True),
        ("claude-*", "gpt-4o", False),
        ("*-mini", "gpt-4o-mini", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "axxbyyc", True),
        ("a*b*c", "acb", False),
        ("ab*ba", "aba", False),
        ("exact", "exact", True),
        ("exact", "exactly", False),
    ],
)
def test_glob(pattern: str, name: str, expected: bool) -> None:
    assert Glob(pattern).match(name) is expected


def test_azure_openai_backends_address_deployments() -> None:
    from tests.helpers import runtime as load

    config = load(
        """
        backends:
          - name: azure
            schema: azure_openai
            url: https://res.openai.azure.com/openai
            credential: {env: TEST_OPENAI_KEY}
          - {name: pinned, schema: azure_openai, url: "https://x.test/openai", api_version: "2025-01-01-preview"}
        models: [{name: m, routes: [{backend: azure, upstream_model: gpt-4o/prod}]}]
        """
    )
    azure = config.backends["azure"]
    assert azure.credential_header == "api-key"
    assert azure.credential_value() == "sk-test-openai"  # no "Bearer" for api-key
    assert azure.provider == "azure.ai.openai"
    assert azure.path("/chat/completions", "gpt-4o/prod") == (
        "/openai/deployments/gpt-4o%2Fprod/chat/completions?api-version=2024-10-21"
    )
    assert config.backends["pinned"].path("/embeddings?user=1", "e") == (
        "/openai/deployments/e/embeddings?user=1&api-version=2025-01-01-preview"
    )
