"""Numbers in header values (and config fields) are ASCII digits or no number at all."""

from __future__ import annotations

import pytest

from extproc.config.loader import ConfigError
from extproc.dataplane import report
from extproc.dataplane.attempt import attempt_index
from extproc.dataplane.decisions import Continue
from extproc.dataplane.exchange import Exchange
from extproc.digits import strict_int
from tests.helpers import BASE_CONFIG, runtime

# Each is true for str.isdigit() or accepted by int(), and none is a header's number.
NOT_NUMBERS = ["²", "١٢", "+5", "-5", " 5", "5 ", "", "5_0", "0x5", "5.0", "1" * 400, "٣"]


def named(text: str) -> str:
    return repr(text) if len(text) < 10 else f"{len(text)} digits"


@pytest.mark.parametrize("text", NOT_NUMBERS, ids=named)
def test_anything_but_ascii_digits_is_no_number(text: str) -> None:
    assert strict_int(text) is None


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("5", 5), ("007", 7), ("999999999999999999", 10**18 - 1)]
)
def test_ascii_digits_are_their_value(text: str, value: int) -> None:
    assert strict_int(text) == value


def test_a_number_past_the_maximum_is_no_number() -> None:
    assert strict_int("65535", 65535) == 65535
    assert strict_int("65536", 65535) is None
    assert strict_int("1" + "0" * 18) is None  # 19 digits


RT = runtime(BASE_CONFIG + "\nlimits: {max_request_bytes: 2048}\n")
HEADERS = {":path": "/v1/chat/completions", ":method": "POST", "authorization": "Bearer key-a"}


@pytest.mark.parametrize("length", NOT_NUMBERS, ids=named)
def test_a_content_length_that_is_no_number_waits_for_the_body(length: str) -> None:
    # No crash and no 413: the body's own size is checked when it arrives.
    exchange = Exchange(RT)
    decision = exchange.request_headers({**HEADERS, "content-length": length}, False)
    assert decision == Continue()
    assert exchange.status == 0


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=named)
def test_response_status_and_attempt_that_are_no_numbers_are_ignored(value: str) -> None:
    exchange = Exchange(RT)
    exchange.request_headers(HEADERS, False)
    exchange.request_body(b'{"model": "resilient", "messages": [{"role": "user", "content": "x"}]}')
    exchange.response_headers({":status": value, "x-envoy-attempt-count": value})
    assert exchange.status == 0
    assert exchange.attempt == 1
    assert report.record(exchange)["backend"] == "openai"


def test_an_attempt_count_that_is_no_number_counts_as_the_first() -> None:
    route = next(m for m in RT.models if m.name == "resilient").routes[0]
    for value in NOT_NUMBERS:
        assert attempt_index(route, value, None) == 0
    assert attempt_index(route, "2", None) == 1


@pytest.mark.parametrize("value", ["²", "١٢", "+5", "5 "])
def test_config_numbers_in_text_that_are_no_numbers_are_problems(value: str) -> None:
    config = BASE_CONFIG + f'\nservice: {{grpc_address: "127.0.0.1:{value}"}}\n'
    with pytest.raises(ConfigError) as raised:
        runtime(config)
    assert any(p.startswith("service.grpc_address") for p in raised.value.problems)
    retry = BASE_CONFIG.replace(
        "    fallbacks: [{backend: second, upstream_model: second}, {backend: anthropic}]",
        "    fallbacks: [{backend: second, upstream_model: second}, {backend: anthropic}]\n"
        f'    retry_on: ["{value}"]',
    )
    with pytest.raises(ConfigError) as raised:
        runtime(retry)
    assert any(".retry_on[0]" in p for p in raised.value.problems), raised.value.problems
