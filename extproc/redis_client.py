"""What every Redis-backed store shares: one way to connect, one way to report failure.

A store (budgets, the response cache, conversation state) raises its own error type; the
message names only the kind of failure ("redis: TimeoutError"), never the URL, whose
password or host the logs must not show.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions


def connect(
    url: str, *, timeout: float, password_env: str = "", health_check_interval: int = 0
) -> aioredis.Redis:
    """A client whose every call (connecting included) ends within `timeout` seconds;
    connections open on first use."""
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if health_check_interval:
        options["health_check_interval"] = health_check_interval
    if password_env:
        options["password"] = os.environ.get(password_env, "")
    return aioredis.Redis.from_url(url, **options)


@contextlib.contextmanager
def failures_as(error: type[Exception]) -> Iterator[None]:
    """Redis's errors, timeouts and socket errors inside the block raise `error`."""
    try:
        yield
    except (redis.exceptions.RedisError, OSError) as failure:
        raise error(f"redis: {type(failure).__name__}") from None
