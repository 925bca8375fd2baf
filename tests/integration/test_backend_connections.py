"""The backend client keeps its connection: a run's stream is read to its end, so httpx2 puts the
connection back in its pool and the next request reuses it (the emulator counts the client
connections requests came on)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import RedisServer
from tests.integration.harness import BACKENDS, Stack, open_stack

MESSAGES = 6


@pytest.fixture(params=BACKENDS)
async def stack(request: pytest.FixtureRequest, redis_server: RedisServer, redis_client: object
                ) -> AsyncIterator[Stack]:
    async with open_stack(redis_server.url, backend=request.param) as s:
        yield s


async def test_messages_of_a_conversation_share_one_connection(stack: Stack) -> None:
    for number in range(1, MESSAGES + 1):
        reply = await stack.ask(f"hello {number}")
        assert reply.text.endswith(f"(message {number} in this thread)")
    assert len(stack.emulator.state.requests) >= MESSAGES  # every request, on either API
    assert stack.emulator.connections == 1


async def test_tool_rounds_reuse_the_connection(stack: Stack) -> None:
    for city in ("Paris", "Oslo", "Lima"):
        reply = await stack.ask(f"what is the weather in {city}?")
        assert "The tool said" in reply.text and city in reply.text
    assert stack.emulator.connections == 1


async def test_a_dropped_stream_costs_one_new_connection(stack: Stack) -> None:
    await stack.ask("first")
    await stack.ask("cut me off !drop")  # the run goes on: the answer is resumed or retried
    reply = await stack.ask("after the cut")
    assert reply.text.endswith("in this thread)")
    assert stack.emulator.connections == 2
