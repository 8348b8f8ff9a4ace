from __future__ import annotations

import pytest

from extproc.apis import ApiError
from extproc.identity import identify, presented_key, spiffe_id, without_params
from tests.helpers import MINIMAL_WITH_ANONYMOUS, runtime

RT = runtime()


def tenant_name(headers: dict[str, str], rt=RT) -> str:  # type: ignore[no-untyped-def]
    result = identify(rt, headers)
    return (
        result.name if not isinstance(result, ApiError) else f"error {result.status} {result.code}"
    )


def test_key_as_bearer_or_x_api_key() -> None:
    assert tenant_name({"authorization": "Bearer key-a"}) == "team-a"
    assert tenant_name({"authorization": "bearer   key-a "}) == "team-a"
    assert tenant_name({"x-api-key": "key-b"}) == "team-b"


def test_unknown_key_is_401_not_anonymous() -> None:
    assert tenant_name({"authorization": "Bearer wrong"}) == "error 401 invalid_api_key"


def test_no_credential_falls_back_to_anonymous_or_401() -> None:
    assert tenant_name({}) == "public"
    no_anonymous = runtime("tenants: [{name: t, api_key_sha256: ['%s']}]" % ("0" * 64))
    assert tenant_name({}, no_anonymous) == "error 401 missing_api_key"


def test_keys_are_ignored_when_no_tenant_uses_keys() -> None:
    # SDKs insist on sending some key; without key auth configured it must not cause a 401.
    anonymous_only = runtime(MINIMAL_WITH_ANONYMOUS)
    assert tenant_name({"authorization": "Bearer sk-anything"}, anonymous_only) == "everyone"


def test_spiffe_identity_from_envoy_xfcc() -> None:
    xfcc = "By=spiffe://test/gw;Hash=abc;URI=spiffe://test/ns/b/sa/app"
    assert tenant_name({"x-forwarded-client-cert": xfcc}) == "team-b"
    assert tenant_name({"x-forwarded-client-cert": "Hash=abc;URI=spiffe://test/other"}) == "public"


def test_key_wins_over_spiffe() -> None:
    headers = {
        "authorization": "Bearer key-a",
        "x-forwarded-client-cert": "URI=spiffe://test/ns/b/sa/app",
    }
    assert tenant_name(headers) == "team-a"


def test_parsers() -> None:
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({"authorization": "Bearer "}) is None
    assert spiffe_id('Hash=1;URI="spiffe://a/b"') == "spiffe://a/b"
    assert spiffe_id("By=x;URI=spiffe://old,By=y;URI=spiffe://new") == "spiffe://new"
    assert spiffe_id("Hash=1") is None


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer key-a"},
        {"x-api-key": "key-a"},
        {"api-key": "key-a"},
        {"x-goog-api-key": "key-a"},
    ],
    ids=["openai-bearer", "anthropic-x-api-key", "azure-api-key", "google-x-goog-api-key"],
)
def test_the_key_is_read_from_each_sdks_default_header(headers: dict[str, str]) -> None:
    assert tenant_name(headers) == "team-a"


def test_the_same_key_in_several_headers_is_one_key() -> None:
    headers = {"authorization": "Bearer key-a", "api-key": "key-a", "x-goog-api-key": " key-a "}
    assert tenant_name(headers) == "team-a"


def test_two_different_keys_are_refused_naming_the_headers_not_the_keys() -> None:
    result = identify(RT, {"x-api-key": "key-a", "api-key": "key-b"})
    assert isinstance(result, ApiError) and (result.status, result.code) == (
        401,
        "conflicting_api_keys",
    )
    assert "'x-api-key'" in result.message and "'api-key'" in result.message
    assert "key-a" not in result.message and "key-b" not in result.message
    # Valid or not, two keys are two keys.
    assert tenant_name({"authorization": "Bearer key-a", "x-goog-api-key": "guess"}) == (
        "error 401 conflicting_api_keys"
    )


def test_a_proxy_credential_or_a_query_key_is_no_gateway_key() -> None:
    assert presented_key({"proxy-authorization": "Bearer key-a"}) is None
    # A Basic credential next to a key is not a second key.
    assert presented_key({"authorization": "Basic abc", "api-key": "key-a"}) == "key-a"
    assert tenant_name({"proxy-authorization": "Bearer key-a"}) == "public"


def test_conflicts_do_not_matter_without_key_authentication() -> None:
    anonymous_only = runtime(MINIMAL_WITH_ANONYMOUS)
    assert tenant_name({"authorization": "Bearer x", "api-key": "y"}, anonymous_only) == (
        "everyone"
    )


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("key=secret", ""),
        ("alt=sse&key=secret", "alt=sse"),
        ("key=a&key=b&x=1", "x=1"),
        ("%6Bey=secret&x=1", "x=1"),  # what a server would read as "key"
        ("KEY=secret", ""),
        ("keys=1&monkey=2&key", "keys=1&monkey=2"),
        ("x=key%3D1&&y=2", "x=key%3D1&y=2"),
        ("x=1;key=secret&y=2", "x=1&y=2"),  # servers that split on ";" read "key" here
        ("key=secret;x=1", "x=1"),
        (";key=secret", ""),
    ],
)
def test_credential_query_parameters_are_removed(query: str, kept: str) -> None:
    assert without_params(query, frozenset({"key"})) == kept
