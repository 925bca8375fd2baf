"""The Responses backend end to end, in each state mode: what each request carries, how the
conversation is kept (server-side or replayed from Redis), budgets, tool loops and failures.

The chat scenarios shared with the Assistants backend are in ``test_engine.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from core.backends.responses import ResponsesBackend
from core.backends.responses_history import Budget, ReplayHistory
from core.errors import LeaseLost
from core.keys import Keys
from tests.conftest import RedisServer
from tests.integration.harness import RESPONSES_BACKEND, Stack, open_stack
from tests.integration.test_cli import clean_env, switchboard

REFERENCE = re.compile(r"\(ref SB-[A-Z0-9]{8}\)")
MODES = ("conversations", "previous_response_id", "replay")


@pytest.fixture(params=MODES)
async def stack(request: pytest.FixtureRequest, redis_server: RedisServer, redis_client: object
                ) -> AsyncIterator[Stack]:
    async with open_stack(redis_server.url, backend=f"responses:{request.param}") as s:
        yield s


def response_bodies(stack: Stack) -> list[dict[str, Any]]:
    return [r.body for r in stack.emulator.state.requests if r.method == "POST" and r.path == "/v1/responses"]


async def stored_thread(stack: Stack, conversation: str = "console:t:c1") -> str | None:
    value = await stack.runtime.store.redis.hget(Keys().conv(conversation), f"thread:{RESPONSES_BACKEND}")
    return str(value) if value is not None else None


async def test_each_request_carries_the_profile(redis_server: RedisServer, redis_client: object) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    rich = {
        "backend": RESPONSES_BACKEND, "model": "emulator-2", "instructions": "Be brief.",
        "additional_instructions": "Answer in English.", "tools": ["get_weather"], "temperature": 0.3,
        "top_p": 0.9, "reasoning_effort": "low", "max_completion_tokens": 256,
        "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}},
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "truncation_strategy": {"type": "auto"}, "metadata": {"team": "support"},
    }
    async with open_stack(redis_server.url, backend="responses:previous_response_id",
                          extra_config={"profiles": {"rich": rich}}) as stack:
        await stack.ask("hello", profile="rich")
        body = response_bodies(stack)[0]
    assert body["model"] == "emulator-2" and body["instructions"] == "Be brief.\n\nAnswer in English."
    assert body["tools"] == [{"type": "function", "name": "get_weather", "description": "Current weather for a city",
                              "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                                             "required": ["location"]}, "strict": False}]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert (body["temperature"], body["top_p"], body["max_output_tokens"]) == (0.3, 0.9, 256)
    assert body["reasoning"] == {"effort": "low"} and body["truncation"] == "auto"
    assert body["text"] == {"format": {"type": "json_schema", "name": "reply", "schema": schema}}
    assert body["metadata"]["team"] == "support" and body["metadata"]["switchboard_profile"] == "rich"
    assert body["stream"] is True and body["input"] == [{"role": "user", "content": "hello"}]


async def test_the_conversation_is_kept_through_tool_rounds(stack: Stack) -> None:
    await stack.ask("first")
    weather = await stack.ask("what's the weather in Oslo?")
    third = await stack.ask("third")
    assert "Oslo" in weather.text
    assert third.text == "[emulator] You said: third (message 3 in this thread)"
    bodies = response_bodies(stack)
    assert len(bodies) == 4  # first, weather (calls), weather (outputs), third
    created = [r.id for r in stack.emulator.responses.state.created]
    if stack.state_mode == "conversations":
        conversation = await stored_thread(stack)
        assert all(b["conversation"] == conversation and b["store"] is True for b in bodies)
        assert [len(b["input"]) for b in bodies] == [1, 1, 1, 1]  # only what is new
    elif stack.state_mode == "previous_response_id":
        assert [b.get("previous_response_id") for b in bodies] == [None, *created[:3]]
        assert await stored_thread(stack) == created[-1]  # the chain's last response, after each answer
    else:
        assert all(b["store"] is False and "previous_response_id" not in b for b in bodies)
        kinds = [item.get("type") or item["role"] for item in bodies[-1]["input"]]
        assert kinds == ["user", "assistant", "user", "function_call", "function_call_output", "assistant", "user"]


async def test_parallel_calls_are_answered_in_one_request(stack: Stack) -> None:
    reply = await stack.ask("weather in Paris and Oslo")
    assert reply.text.count("The tool said") == 2
    first, second = stack.emulator.responses.state.created
    calls = [item["call_id"] for item in first.obj["output"] if item["type"] == "function_call"]
    outputs = [item["call_id"] for item in second.new_items if item["type"] == "function_call_output"]
    assert len(calls) == 2 and outputs == calls


async def test_a_tool_loop_stops_at_max_rounds_and_the_conversation_goes_on(
    redis_server: RedisServer, redis_client: object, mode: str,
) -> None:
    async with open_stack(redis_server.url, backend=f"responses:{mode}",
                          extra_config={"gateway": {"max_tool_rounds": 2}}) as stack:
        stack.emulator.responses.state.repeat_tool_calls = True
        reply = await stack.ask("call echo_tool {}")
        assert "called tools too many times" in reply.text and REFERENCE.search(reply.text)
        assert len(stack.tools.calls) == 2  # the third round's calls were never made
        stack.emulator.responses.state.repeat_tool_calls = False
        after = await stack.ask("after")
    # A conversation keeps the stopped turn (its calls answered with an error); elsewhere it never entered.
    expected = 2 if mode == "conversations" else 1
    assert after.text == f"[emulator] You said: after (message {expected} in this thread)"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_replay_trims_history_to_the_message_budget(redis_server: RedisServer, redis_client: object) -> None:
    budget = {"backends": {RESPONSES_BACKEND: {"kind": "responses", "state": "replay", "replay_max_messages": 4}}}
    async with open_stack(redis_server.url, backend="responses:replay", extra_config=budget) as stack:
        counts = [(await stack.ask(text)).text.rsplit("(message ", 1)[1] for text in ("a", "b", "c", "d")]
        last_input = response_bodies(stack)[-1]["input"]
    assert counts == ["1 in this thread)", "2 in this thread)", "3 in this thread)", "3 in this thread)"]
    assert [item["content"] for item in last_input if item["role"] == "user"] == ["b", "c", "d"]


async def test_replay_trims_history_to_the_character_budget(redis_server: RedisServer, redis_client: object
                                                            ) -> None:
    budget = {"backends": {RESPONSES_BACKEND: {"kind": "responses", "state": "replay", "replay_max_chars": 1000}}}
    async with open_stack(redis_server.url, backend="responses:replay", extra_config=budget) as stack:
        await stack.ask("first")
        essay = await stack.ask("essay !long=1500")
        third = await stack.ask("third")
        fourth = await stack.ask("fourth")
    assert len(essay.text) == 1500
    # The essay's turn alone is over budget: it is dropped, and everything older with it.
    assert third.text.endswith("(message 1 in this thread)")
    assert fourth.text.endswith("(message 2 in this thread)")


async def test_replayed_history_lives_beside_the_conversation(redis_server: RedisServer, redis_client: object
                                                               ) -> None:
    async with open_stack(redis_server.url, backend="responses:replay") as stack:
        await stack.ask("remember me")
        thread = await stored_thread(stack)
        assert thread is not None and thread.startswith("replay_")
        key = Keys().replay("console:t:c1", thread)
        assert key.startswith(Keys().conv("console:t:c1").split(":conv:")[0])  # same hash tag
        redis = stack.runtime.store.redis
        assert "remember me" in str(await redis.get(key))
        assert 0 < int(await redis.ttl(key)) <= stack.runtime.config.gateway.conversation_ttl_s


async def test_a_streamed_error_event_is_a_failed_answer(stack: Stack) -> None:
    stack.emulator.responses.state.stream_errors = 1
    reply = await stack.ask("hello")
    assert "The assistant failed while answering." in reply.text and REFERENCE.search(reply.text)
    assert (await stack.ask("again")).text.startswith("[emulator] You said: again")
    backend = stack.runtime.backends.backends[RESPONSES_BACKEND]
    assert isinstance(backend, ResponsesBackend) and backend._answers == {}  # ended turns are not remembered


async def test_an_expired_previous_response_starts_a_new_chain(redis_server: RedisServer, redis_client: object
                                                               ) -> None:
    async with open_stack(redis_server.url, backend="responses:previous_response_id") as stack:
        await stack.ask("first")
        stack.emulator.responses.state.stored.clear()  # stored responses expire on OpenAI after 30 days
        reply = await stack.ask("second")
    assert reply.text == "[emulator] You said: second (message 1 in this thread)"


async def test_conversations_on_a_server_without_them_is_a_clear_error(
    redis_server: RedisServer, redis_client: object, caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_stack(redis_server.url, backend="responses:conversations") as stack:
        stack.emulator.responses.state.conversations_enabled = False
        reply = await stack.ask("hello")
    assert "not found" in reply.text and REFERENCE.search(reply.text)
    assert any("use state: previous_response_id or replay" in r.getMessage() for r in caplog.records)


async def test_history_writes_are_fenced_by_the_lease(redis_client: aioredis.Redis) -> None:
    keys = Keys()
    history = ReplayHistory(redis_client, keys=keys, budget=Budget(max_messages=50, max_chars=48_000), ttl_s=3600)
    turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    await redis_client.set(keys.lease("console:t:c1"), "mine")
    await history.append("console:t:c1", "replay_1", turn, lease_token="mine")
    with pytest.raises(LeaseLost):
        await history.append("console:t:c1", "replay_1", [{"role": "user", "content": "late"}], lease_token="stale")
    assert await history.load("console:t:c1", "replay_1") == turn


async def test_demo_runs_on_the_responses_api() -> None:
    code, out, err = await switchboard(
        "demo", "--backend", "responses", env=clean_env(),
        stdin=b"hello\nagain\nwhat's the weather in Paris?\n/quit\n")
    assert code == 0, err
    assert "local Responses API (with Conversations) emulator" in out
    assert "[emulator] You said: again (message 2 in this thread)" in out
    assert "tool get_weather" in out and "[emulator] The tool said:" in out


async def test_a_failed_tool_round_request_is_resumed(stack: Stack) -> None:
    tools = stack.runtime.engine.tools
    failed: list[bool] = []

    class RateLimitAfterFirstRound:
        """Tools answer, then the request that carries their outputs meets 429s past the SDK's retries."""

        async def run_calls(self, **kwargs: Any) -> Any:
            outputs = await tools.run_calls(**kwargs)
            if not failed:
                failed.append(True)
                stack.emulator.fail_next(429, count=3)
            return outputs

    stack.runtime.engine.tools = RateLimitAfterFirstRound()
    reply = await stack.ask("weather in Oslo")
    assert reply.text.startswith("[emulator] The tool said: ") and "Oslo" in reply.text
    assert reply.text.count("The tool said") == 1 and REFERENCE.search(reply.text) is None
    # A stored response is re-attached to and its calls made again; a replayed request is sent again.
    assert len(stack.weather.received) == (1 if stack.state_mode == "replay" else 2)
