from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from extproc.apis import Schema
from extproc.apis.validation import MODEL_NAME
from extproc.config import ConfigError, defaults, load_file, load_text
from extproc.config.runtime import Secret
from extproc.config.schema import NAME
from extproc.config.settings import Capture, ConversationSettings, Redis
from extproc.config.v1 import config_pb2 as pb
from extproc.config.v1 import options_pb2
from extproc.control.cli import main
from extproc.glob import Glob
from extproc.state.turns import Bounds
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
        ("service: {workers: 65}", "service.workers: at most 64"),
        ("service: {message_timeout: 0s}", "service.message_timeout: must be positive"),
        ("capture: {sample_rate: 1.5}", "capture.sample_rate: must be between 0 and 1"),
        (
            "mcp_servers: [{name: github, url: 'http://x/mcp'}]\n"
            "capture: {rates: [{mcp_servers: ['git*', gihtub], rate: 1}]}",
            'capture.rates[0].mcp_servers[1]: no MCP server named "gihtub"',
        ),
        (
            "backends: [{name: b, url: 'http://x', headers: {x-a: \"1\\n2\"}}]",
            "backends[0].headers.x-a: value contains a control character",
        ),
        (
            "backends: [{name: b, url: 'http://x', credential: {env: K, header: 'a b'}}]",
            'backends[0].credential.header: "a b" is not a header the gateway can set',
        ),
        (
            "backends: [{name: b, url: 'http://x', credential: {header: x-key}}]",
            "backends[0].credential: header is set but neither env nor file",
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m, aliases: ['m-*'], routes: [{backend: b}]}]",
            'models[0].aliases[0]: must not contain "*"',
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m, routes: [{upstream_model: x}]}]",
            "models[0].routes[0].backend: required",
        ),
        (
            "backends: [{name: b, url: 'http://x'}]\nmodels: [{name: m, routes: [{backend: b}], deprecation: {replacement: m}}]",
            "models[0].deprecation: set deprecated_at, sunset, or both",
        ),
        (
            "accounting: {store: {redis: {url: 'http://redis'}}}",
            'accounting.store.redis.url: expected "redis://host:port/db"',
        ),
        ("conversations: {ttl: 0s}", "conversations.ttl: "),
        ("conversations: {max_bytes: 600000000}", "conversations.max_bytes: "),
        ("conversations: {redis: {url: 'http://redis'}}", "conversations.redis.url: expected"),
        (
            "conversations: {max_bytes: 2000, max_total_bytes: 1000}",
            "conversations.max_bytes: larger than conversations.max_total_bytes",
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
    loaded = load_text(MINIMAL)
    assert (loaded.listener.address, loaded.listener.port) == ("127.0.0.1", 10000)
    assert (loaded.admin.address, loaded.admin.port) == ("127.0.0.1", 9901)
    assert loaded.service.grpc_address == "127.0.0.1:50051"
    assert loaded.service.message_timeout == 2.0
    assert loaded.listener.request_timeout == 300
    assert loaded.max_request_bytes == 32 * 1024 * 1024
    assert loaded.models[0].retry_on == ("connect-failure", "reset", "5xx", "429")


def test_every_default_in_the_schema_is_a_value_a_config_could_hold() -> None:
    found = 0
    for message in _messages(pb.DESCRIPTOR.message_types_by_name.values()):
        cls = getattr(pb, message.name) if message.containing_type is None else None
        for field in message.fields:
            if not field.GetOptions().HasExtension(options_pb2.default) or cls is None:
                continue
            found += 1
            value = defaults.of(cls, field.name)
            # A default of zero would be no default: proto3 cannot tell it from unset.
            assert value, f"{message.name}.{field.name}"
    assert found >= 40


def _messages(messages: Any) -> Any:
    for message in messages:
        yield message
        yield from _messages(message.nested_types)


def test_defaults_fill_the_sections_and_the_messages_that_are_set() -> None:
    bare = load_text(MINIMAL)
    assert bare.cache.redis is None and bare.store.redis is None
    assert bare.capture == Capture("", 0.0, (), 64 * 1024 * 1024, 3, 1024 * 1024)
    both = load_text(
        MINIMAL
        + "cache: {redis: {url: 'redis://r'}}\naccounting: {store: {redis: {url: 'redis://r'}}}"
    )
    # One message type, two places: the cache's keys are kept apart from the budgets'.
    assert both.cache.redis == Redis("redis://r", "extproc:cache:", 0.25, "")
    assert both.store.redis == Redis("redis://r", "extproc:", 0.25, "")
    weights = load_text(
        MINIMAL.replace("routes: [{backend: b}]", "routes: [{backend: b}, {backend: b, weight: 3}]")
    )
    assert weights.models[0].cumulative_weights == (1, 4)


@pytest.mark.parametrize(
    "name", ["b", "Team_1.a-b", "x" * 63, "", "-a", "a b", "x" * 64, "ü", "a/b"]
)
def test_names_checked_in_code_follow_the_schemas_rule(name: str) -> None:
    """Policies' names are checked with schema.NAME, client model names with MODEL_NAME:
    they must agree with the rules the schema applies to every other name."""
    problems = problems_of(f"tenants: [{{name: '{name}'}}]\nmodels: [{{name: '{name}'}}]")
    assert any(p.startswith("tenants[0].name:") for p in problems) is not NAME.match(name)
    model_name = any(p.startswith("models[0].name:") for p in problems)
    assert model_name is not MODEL_NAME.match(name)


def test_check_config_prints_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "service: {workers: 100}\n"
        "backends: [{name: b, url: 'ftp://x'}]\n"
        "models: [{name: m, routes: [{backend: b, weight: 0}]}]\n"
        "tenants: [{name: t, api_key_sha256: [zz]}, {name: t}]\n"
    )
    with pytest.raises(SystemExit):
        main(["check-config", str(bad)])
    err = capsys.readouterr().err
    for expected in (
        "service.workers: at most 64",
        'backends[0].url: expected an http:// or https:// URL, got "ftp://x"',
        "models[0].routes[0].weight: must be positive",
        "tenants[0].api_key_sha256[0]: expected 64 hex digits",
        'tenants[1].name: duplicate tenant name "t"',
    ):
        assert f"  {expected}" in err, err


def test_client_credentials_default_to_every_sdks_headers_and_googles_query_key() -> None:
    loaded = load_text(MINIMAL)
    assert loaded.client_credential_headers == (
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "proxy-authorization",
    )
    assert list(defaults.of(pb.Auth, "client_credential_headers")) == list(
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
    assert loaded.service.message_timeout == 0.25
    assert loaded.service.shutdown_grace == 90


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


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("{detector: phone, phone: {regions: [XX]}}", "phone.regions: no numbering plan for XX"),
        ("{detector: phone, phone: {regions: [de]}}", "phone.regions[0]: expected a region code"),
        ("{detector: email, phone: {regions: [DE]}}", "phone: applies to detector phone only"),
        ("{detector: phone, phone: {leniency: loose}}", "phone.leniency: expected one of"),
    ],
)
def test_phone_options_are_checked(rule: str, expected: str) -> None:
    text = MINIMAL + f"policies:\n  - name: p\n    pii:\n      - {rule}\n"
    assert any(p.startswith(f"policies[0].pii[0].{expected}") for p in problems_of(text))


def test_phone_options_make_a_detector_shared_by_identical_rules() -> None:
    rules = "{detector: phone, phone: {regions: [DE, FR], leniency: possible}}"
    loaded = load_text(
        MINIMAL + f"policies:\n  - name: p\n    pii: [{rules}]\n  - name: q\n    pii: [{rules}]\n"
    )
    first, second = (policy.pii[0].detector for policy in loaded.policies.values())
    assert first is second and first.name == "phone"


def test_which_openai_backends_take_the_responses_api_as_it_is() -> None:
    loaded = load_text(
        textwrap.dedent(
            """
            backends:
              - {name: openai, url: "https://api.openai.com/v1"}
              - {name: vllm, url: "http://127.0.0.1:8000/v1"}
              - {name: proxy, url: "http://127.0.0.1:8001/v1", responses_api: true}
              - {name: pinned, url: "https://api.openai.com/v1", responses_api: false}
              - {name: only, schema: openai_responses, url: "http://127.0.0.1:9/v1"}
            models: [{name: m, routes: [{backend: vllm}]}]
            """
        )
    )
    native = {name for name, b in loaded.backends.items() if b.responses_api}
    assert native == {"openai", "proxy"}
    responses = Schema.OPENAI_RESPONSES
    assert loaded.backends["openai"].speaks(responses) is responses
    assert loaded.backends["vllm"].speaks(responses) is Schema.OPENAI
    assert loaded.backends["only"].speaks(Schema.OPENAI) is responses


def test_responses_api_is_an_openai_backends_setting() -> None:
    problems = problems_of(
        """
        backends: [{name: a, schema: anthropic, url: "http://127.0.0.1:9/v1", responses_api: true}]
        models: [{name: m, routes: [{backend: a}]}]
        """
    )
    assert problems == ["backends[0].responses_api: applies to openai backends only"]


def test_conversations_max_bytes_over_redis_limit_is_one_problem() -> None:
    assert problems_of("conversations: {max_bytes: 600000000}") == [
        "conversations.max_bytes: at most 536870912"
    ]


def test_conversations_default_to_a_bounded_in_process_store() -> None:
    assert load_text(MINIMAL).conversations == ConversationSettings(
        bounds=Bounds(ttl=24 * 3600, max_items=1000, max_bytes=4 * 1024 * 1024),
        max_total_bytes=256 * 1024 * 1024,
        max_entries=100_000,
        redis=None,
        disabled=False,
        disabled_because="",
    )


def test_conversations_in_redis_keep_their_own_keys() -> None:
    loaded = load_text(
        MINIMAL
        + "conversations: {ttl: 90m, max_items: 50, max_bytes: 65536,"
        + " redis: {url: 'redis://r', timeout: 100ms}}\n"
        + "cache: {redis: {url: 'redis://r'}}"
    )
    settings = loaded.conversations
    assert settings.bounds == Bounds(ttl=5400, max_items=50, max_bytes=65536)
    assert settings.redis == Redis("redis://r", "extproc:responses:", 0.1, "")
    assert not settings.disabled
    assert loaded.cache.redis is not None and loaded.cache.redis.key_prefix == "extproc:cache:"
    # In Redis, the in-process total does not bound one conversation.
    assert not load_text(
        MINIMAL + "conversations: {max_bytes: 2000, max_total_bytes: 1000, redis: {url: redis://r}}"
    ).conversations.disabled


@pytest.mark.parametrize(
    ("extra", "because"),
    [
        ("conversations: {disabled: true}", "conversations.disabled is set"),
        (
            "service: {workers: 2}",
            "more than one service worker and no conversations.redis",
        ),
    ],
)
def test_conversations_off_say_why(extra: str, because: str) -> None:
    settings = load_text(MINIMAL + extra).conversations
    assert settings.disabled and settings.disabled_because == because


def test_conversations_with_workers_in_redis_are_kept() -> None:
    settings = load_text(
        MINIMAL + "service: {workers: 2}\nconversations: {redis: {url: 'redis://r'}}"
    ).conversations
    assert not settings.disabled and settings.redis is not None
