"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from extproc.devtools.mock_provider import MockProvider


@pytest.fixture
async def mock_url() -> AsyncIterator[str]:
    """The mock provider on a loopback port: its base URL."""
    server = TestServer(MockProvider().app())
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()
