from __future__ import annotations

import datetime as dt
import fnmatch

from hypothesis import given
from hypothesis import strategies as st

from extproc.apis import ApiError
from extproc.glob import Glob
from extproc.routing import Routed, listing, resolve
from tests.helpers import runtime

BEFORE_SUNSET = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
AFTER_SUNSET = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
RT = runtime()
TEAM_A = RT.tenants["team-a"]
TEAM_B = RT.tenants["team-b"]
PUBLIC = RT.tenants["public"]


def routed(model: str, tenant=TEAM_A, *, now=BEFORE_SUNSET, roll=0.0) -> Routed:  # type: ignore[no-untyped-def]
    result = resolve(RT, model, tenant, now=now, roll=roll)
    assert isinstance(result, Routed), result
    return result


def error(model: str, tenant=TEAM_A, *, now=BEFORE_SUNSET) -> ApiError:  # type: ignore[no-untyped-def]
    result = resolve(RT, model, tenant, now=now, roll=0.0)
    assert isinstance(result, ApiError), result
    return result


def test_exact_name_and_alias_select_the_same_entry() -> None:
    assert routed("gpt-4o-mini").model is routed("mini", PUBLIC).model
    # An alias is the gateway's name; the provider gets the model's.
    assert routed("mini", PUBLIC).upstream_model == "gpt-4o-mini"


def test_upstream_model_rewrite() -> None:
    result = routed("gpt-4o")
    assert result.upstream_model == "gpt-4o-2024-08-06"
    assert result.route.attempts[0].backend.name == "openai"


def test_wildcard_passes_the_requested_name_upstream() -> None:
    result = routed("claude-3-5-haiku", TEAM_B)
    assert result.model.name == "claude-*"
    assert result.upstream_model == "claude-3-5-haiku"


def test_weighted_split_follows_the_weights() -> None:
    # Weights 3:1 -> rolls below 0.75 pick the first route.
    assert routed("split", roll=0.0).upstream_model == "split-a"
    assert routed("split", roll=0.74).upstream_model == "split-a"
    assert routed("split", roll=0.75).upstream_model == "split-b"
    assert routed("split", roll=0.999).route.attempts[0].backend.name == "second"


def test_unknown_model_is_404() -> None:
    failure = error("gpt-9")
    assert (failure.status, failure.code) == (404, "model_not_found")
    assert "gpt-9" in failure.message


def test_model_outside_allow_list_is_403() -> None:
    assert error("gpt-4o", PUBLIC).status == 403
    assert error("claude-3-opus", TEAM_A).status == 403
    # The allow-list is checked against the config entry, not the alias the client used.
    assert routed("mini", PUBLIC).model.name == "gpt-4o-mini"


def test_deprecated_model_is_served_with_headers_before_sunset() -> None:
    result = routed("old")
    assert result.deprecation is not None
    headers = dict(result.deprecation.response_headers)
    assert headers["deprecation"] == f"@{int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())}"
    assert headers["sunset"] == "Tue, 30 Jun 2026 00:00:00 GMT"
    assert headers["link"] == '</v1/models/gpt-4o-mini>; rel="successor-version"'


def test_after_sunset_reject_names_the_replacement() -> None:
    failure = error("gone", now=AFTER_SUNSET)
    assert (failure.status, failure.code) == (410, "model_retired")
    assert "`gpt-4o`" in failure.message and "2026-06-30" in failure.message
    assert isinstance(resolve(RT, "gone", TEAM_A, now=BEFORE_SUNSET, roll=0.0), Routed)


def test_after_sunset_reroute_serves_the_replacement() -> None:
    result = routed("moved", now=AFTER_SUNSET)
    assert result.rerouted and result.name == "gpt-4o"
    assert result.upstream_model == "gpt-4o-2024-08-06"
    assert result.deprecation is not None  # the client still learns its model is retired


def test_fallback_route_lists_attempts_in_order() -> None:
    result = routed("resilient")
    assert [t.backend.name for t in result.route.attempts] == ["openai", "second", "anthropic"]
    assert result.route.cluster.startswith("fallback.")
    assert [result.upstream_model_for(i) for i in range(3)] == ["first", "second", "resilient"]


def test_listing_shows_allowed_exact_names_only() -> None:
    ids = {item["id"] for item in listing(RT, PUBLIC)}
    assert ids == {"gpt-4o-mini", "mini"}
    assert "claude-*" not in {item["id"] for item in listing(RT, TEAM_B)}


@given(
    st.text(alphabet="ab*", max_size=8).filter(lambda p: "**" not in p),
    st.text(alphabet="ab", max_size=10),
)
def test_glob_agrees_with_fnmatch(pattern: str, name: str) -> None:
    assert Glob(pattern).match(name) == fnmatch.fnmatchcase(name, pattern)
