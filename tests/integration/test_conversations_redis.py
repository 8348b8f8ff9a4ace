"""Conversation state in Redis, through two real gateways sharing it: a conversation begun
on one continues on the other; while Redis is down a continuation is a clear 503, a new
conversation is served (its answer not kept), and the gateway recovers when Redis returns."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import RedisServer
from tests.integration.conftest import MOCK_BOTH, PORTS, Gateway, start_gateway

CONFIG = (
    PORTS
    + MOCK_BOTH
    + """conversations: {{redis: {{url: "{redis}", timeout: 0.2s}}}}
tenants: [{{name: anyone}}]
auth: {{anonymous_tenant: anyone}}
"""
)


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, Gateway, Gateway]]:
    server = RedisServer(tmp_path_factory.mktemp("redis-conversations"))
    server.start()
    first = start_gateway(tmp_path_factory.mktemp("first"), CONFIG, redis=server.url)
    try:
        second = start_gateway(tmp_path_factory.mktemp("second"), CONFIG, redis=server.url)
    except Exception:
        first.stack.stop()
        server.stop()
        raise
    try:
        yield server, first, second
    finally:
        second.stack.stop()
        first.stack.stop()
        server.stop()


def sdk(gateway: Gateway) -> openai.OpenAI:
    return gateway.openai(key="none")


def store_errors(gateway: Gateway, operation: str) -> float:
    prefix = f'extproc_conversation_store_errors_total{{operation="{operation}"}}'
    for row in httpx.get(gateway.metrics_url, timeout=5).text.splitlines():
        if row.startswith(prefix):
            return float(row.split()[-1])
    return 0.0


def test_a_conversation_moves_between_gateways(
    shared: tuple[RedisServer, Gateway, Gateway],
) -> None:
    _, first, second = shared
    begun = sdk(first).responses.create(model="claude-3-5-haiku", input="My name is Ann.")
    follow = sdk(second).responses.create(
        model="claude-3-5-haiku", input="Who am I?", previous_response_id=begun.id
    )
    assert follow.usage is not None and begun.usage is not None
    assert follow.usage.input_tokens > begun.usage.input_tokens  # the first turn went too
    assert sdk(first).responses.retrieve(follow.id).output_text == "Who am I?"
    sdk(second).responses.delete(begun.id)
    with pytest.raises(openai.NotFoundError):
        sdk(first).responses.retrieve(begun.id)


def test_redis_down_then_back(shared: tuple[RedisServer, Gateway, Gateway]) -> None:
    server, first, _ = shared
    kept = sdk(first).responses.create(model="gpt-4o-mini", input="Remember me.")
    server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            sdk(first).responses.create(
                model="gpt-4o-mini", input="Again.", previous_response_id=kept.id
            )
        assert caught.value.status_code == 503
        assert caught.value.code == "conversation_state_unavailable"
        assert time.monotonic() - started < 5  # the store's timeout, not a hang
        with pytest.raises(openai.APIStatusError) as caught:
            sdk(first).responses.retrieve(kept.id)
        assert caught.value.status_code == 503
        saves = store_errors(first, "save")
        unkept = sdk(first).responses.create(model="gpt-4o-mini", input="Served anyway.")
        assert unkept.output_text == "Served anyway."
        assert store_errors(first, "save") == saves + 1
    finally:
        server.start()
    # Redis is back (empty: it keeps nothing on disk here): the store answers again.
    deadline = time.monotonic() + 10
    while True:
        try:
            sdk(first).responses.retrieve(kept.id)
        except openai.NotFoundError:
            break
        except openai.APIStatusError as error:
            assert error.status_code == 503 and time.monotonic() < deadline
            time.sleep(0.1)
    fresh = sdk(first).responses.create(model="gpt-4o-mini", input="Remember me.")
    again = sdk(first).responses.create(
        model="gpt-4o-mini", input="Again.", previous_response_id=fresh.id
    )
    assert again.output_text == "Again."
    with pytest.raises(openai.BadRequestError) as caught:  # never kept: Redis was down
        sdk(first).responses.create(
            model="gpt-4o-mini", input="And?", previous_response_id=unkept.id
        )
    assert caught.value.code == "previous_response_not_found"
