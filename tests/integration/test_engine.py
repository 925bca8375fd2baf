"""Core end to end: real Redis, the real ``openai`` SDK against the emulator over HTTP, real tool
endpoints; only the chat platform is an in-memory recording sink (a port fake).

Every chat scenario runs on each backend of ``BACKENDS`` (the ``stack`` fixture is parametrised):
the Assistants API and the Responses API in its three state modes. The emulator counts the user
messages of the context each request carried, so "message N" proves the history was kept.
Scenarios that only exist on one API use ``assistants_stack``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest

from core.config import ProfileConfig
from core.errors import StoreUnavailable
from core.gateway import Gateway, MessageRejected
from core.keys import Keys
from core.models import InboundMessage, Place
from core.runtime import open_runtime
from core.store import Store, StoreLimits
from tests.conftest import RedisServer
from tests.integration.harness import BACKENDS, Stack, open_stack, stack_config

REFERENCE = re.compile(r"\(ref SB-[A-Z0-9]{8}\)")

# The requests that carry a new conversation's first message (besides the one-time assistant sync),
# as prefixes: the thread is created and recorded before the run (record before you start).
FIRST_MESSAGE_REQUESTS = {
    "assistants": ["POST /v1/threads/thread_"],
    "responses:conversations": ["POST /v1/conversations", "POST /v1/responses"],
    "responses:previous_response_id": ["POST /v1/responses"],
    "responses:replay": ["POST /v1/responses"],
}
FOLLOW_UP_REQUEST = {
    "assistants": "POST /v1/threads/thread_", "responses:conversations": "POST /v1/responses",
    "responses:previous_response_id": "POST /v1/responses", "responses:replay": "POST /v1/responses",
}
# What tool endpoints see as run_id and thread_id: the run or response, and the thread the backend keeps.
ID_PREFIXES = {
    "assistants": ("run_", "thread_"), "responses:conversations": ("resp_", "conv_"),
    "responses:previous_response_id": ("resp_", "resp_"), "responses:replay": ("resp_", "replay_"),
}


@pytest.fixture(params=BACKENDS)
async def stack(request: pytest.FixtureRequest, redis_server: RedisServer, redis_client: object
                ) -> AsyncIterator[Stack]:
    async with open_stack(redis_server.url, backend=request.param) as s:
        yield s


@pytest.fixture
async def assistants_stack(redis_server: RedisServer, redis_client: object) -> AsyncIterator[Stack]:
    async with open_stack(redis_server.url) as s:
        yield s


def backend_requests(stack: Stack) -> list[str]:
    """The requests that carried messages: runs, or responses and conversations."""
    requests = [f"{r.method} {r.path}" for r in stack.emulator.state.requests]
    if stack.backend == "assistants":
        return [r for r in requests if "/runs" in r]
    return [r for r in requests if r.split()[1].startswith(("/v1/responses", "/v1/conversations"))]


async def test_new_conversation_creates_one_thread_and_answers(stack: Stack) -> None:
    reply = await stack.ask("hello there")
    assert reply.text == "[emulator] You said: hello there (message 1 in this thread)"
    assert await stack.contexts() == 1
    requests, expected = backend_requests(stack), FIRST_MESSAGE_REQUESTS[stack.backend]
    assert len(requests) == len(expected) and all(map(str.startswith, requests, expected)), requests
    assert reply.working == 1 and reply.done_calls == 1


async def test_follow_up_reuses_the_thread(stack: Stack) -> None:
    await stack.ask("first")
    reply = await stack.ask("second")
    assert reply.text.endswith("(message 2 in this thread)")
    assert await stack.contexts() == 1
    assert backend_requests(stack)[-1].startswith(FOLLOW_UP_REQUEST[stack.backend])


async def test_separate_conversations_get_separate_threads(stack: Stack) -> None:
    await stack.ask("one", conversation="console:t:a")
    reply = await stack.ask("two", conversation="console:t:b")
    assert reply.text.endswith("(message 1 in this thread)")
    assert await stack.contexts() == 2


async def test_tool_call_end_to_end_signed(stack: Stack) -> None:
    reply = await stack.ask("what's the weather in Lisbon?")
    assert len(stack.weather.received) == 1  # the endpoint verified the Standard Webhooks signature
    body = stack.weather.received[0]
    assert body["tool"] == "get_weather" and body["arguments"] == {"location": "Lisbon"}
    assert body["context"]["conversation"] == "console:t:c1"
    run_prefix, thread_prefix = ID_PREFIXES[stack.backend]
    assert body["run_id"].startswith(run_prefix) and body["thread_id"].startswith(thread_prefix)
    assert reply.text.startswith("[emulator] The tool said: ")
    assert "Lisbon" in reply.text


async def test_parallel_tool_calls_all_answered(stack: Stack) -> None:
    reply = await stack.ask("weather in Paris and Oslo")
    assert sorted(b["arguments"]["location"] for b in stack.weather.received) == ["Oslo", "Paris"]
    assert reply.text.count("The tool said") == 2 and "Oslo" in reply.text and "Paris" in reply.text


@pytest.mark.parametrize(("text", "expected"), [
    ("call fail_tool {}", "HTTP 500"),
    ("call hang_tool {}", "did not answer within"),
    ("call big_tool {}", "larger than 10000 bytes"),
    ("call echo_tool {not json", "not valid JSON"),
])
async def test_tool_failures_still_finish_the_run(stack: Stack, text: str, expected: str) -> None:
    reply = await stack.ask(text)
    assert reply.text.startswith("[emulator] The tool said: {\"error\": ")
    assert expected.lower() in reply.text.lower()


async def test_plain_text_tool_answer_is_used_as_is(stack: Stack) -> None:
    reply = await stack.ask("call text_tool {}")
    assert reply.text == "[emulator] The tool said: plain words, not JSON"


async def test_functions_the_profile_does_not_list_are_never_sent(assistants_stack: Stack) -> None:
    stack = assistants_stack
    client = stack.runtime.backends.clients["default"]
    fn = {"type": "object", "properties": {}}
    assistant = await client.beta.assistants.create(model="m", tools=[
        {"type": "function", "function": {"name": "echo_tool", "parameters": fn}},
        {"type": "function", "function": {"name": "mystery_fn", "parameters": fn}}])
    stack.runtime.config.profiles["fixed"] = ProfileConfig(assistant_id=assistant.id, tools=["get_weather"])
    for text, wording in [("call echo_tool {}", "not enabled"), ("call mystery_fn {}", "no tool named")]:
        reply = await stack.ask(text, profile="fixed")
        assert reply.text.startswith("[emulator] The tool said: {\"error\": "), reply.text
        assert wording in reply.text
    assert stack.tools.calls == []


async def test_back_to_back_messages_answered_in_order_without_400(stack: Stack) -> None:
    first = await stack.send("one !slow=0.4")
    second = await stack.send("two")
    third = await stack.send("three")
    replies = [await stack.answer(m) for m in (first, second, third)]
    assert [r.text.split(":", 1)[1].strip() for r in replies] == [
        "one (message 1 in this thread)", "two (message 2 in this thread)", "three (message 3 in this thread)"]
    assert stack.sinks.order == [first, second, third]
    assert stack.emulator.state.active_run_conflicts == 0
    assert all(r.status != 400 for r in stack.emulator.state.requests)


async def test_redelivered_event_is_answered_once(stack: Stack) -> None:
    first = await stack.send("only once", event_id="Ev1")
    again = await stack.send("only once", event_id="Ev1")
    assert again == first
    reply = await stack.answer(first)
    await asyncio.sleep(0.3)
    assert reply.posts == 1 and len(stack.sinks.order) == 1
    assert await stack.contexts() == 1


@pytest.mark.parametrize(("directive", "wording"), [("!fail", "failed"), ("!incomplete", "cut short")])
async def test_run_ending_badly_gives_a_clear_error_with_reference(
    stack: Stack, directive: str, wording: str, caplog: pytest.LogCaptureFixture,
) -> None:
    await _assert_clear_error(stack, directive, wording, caplog)


@pytest.mark.parametrize(("directive", "wording"), [("!expire", "expired"), ("!cancel", "cancelled")])
async def test_assistants_run_ending_badly_gives_a_clear_error_with_reference(
    assistants_stack: Stack, directive: str, wording: str, caplog: pytest.LogCaptureFixture,
) -> None:
    # Runs expire and are cancelled on the Assistants API only; a streamed response does neither.
    await _assert_clear_error(assistants_stack, directive, wording, caplog)


async def _assert_clear_error(stack: Stack, directive: str, wording: str, caplog: pytest.LogCaptureFixture) -> None:
    reply = await stack.ask(f"please {directive}")
    assert wording in reply.text
    match = REFERENCE.search(reply.text)
    assert match, reply.text
    reference = match.group(0)[5:-1]
    assert any(getattr(r, "reference", None) == reference for r in caplog.records)
    assert reply.done_calls == 1


async def test_backend_http_errors_become_clear_messages(stack: Stack) -> None:
    reply = await stack.ask("hi !http=401")
    assert "credentials" in reply.text and REFERENCE.search(reply.text)
    reply = await stack.ask("hi !http=400")
    assert "refused" in reply.text


async def test_backend_429_is_retried_by_the_sdk(stack: Stack) -> None:
    await stack.ask("warm up")  # the assistant exists now; the next request is the run itself
    stack.emulator.fail_next(429, count=2)
    reply = await stack.ask("after a rate limit")
    assert reply.text.startswith("[emulator] You said: after a rate limit")


async def test_dropped_stream_is_resumed(stack: Stack) -> None:
    # The run (or stored response) is re-attached to; a replayed turn is sent again.
    reply = await stack.ask("hello !drop")
    assert reply.text == "[emulator] You said: hello (message 1 in this thread)"
    assert reply.done_calls == 1


async def test_reset_starts_a_new_thread(stack: Stack) -> None:
    await stack.ask("first")
    await stack.runtime.gateway.reset("console:t:c1")
    reply = await stack.ask("after reset")
    assert reply.text.endswith("(message 1 in this thread)")
    assert await stack.contexts() == 2


async def test_long_answer_is_split_into_parts(stack: Stack) -> None:
    stack.sinks.limit_chars = 1000
    reply = await stack.ask("essay !long=3500")
    assert len(reply.parts) >= 4
    assert all(len(p) <= 1000 for p in reply.parts.values())
    assert all(p.count("```") % 2 == 0 for p in reply.parts.values())


async def test_oversized_and_empty_messages_are_rejected(stack: Stack) -> None:
    with pytest.raises(MessageRejected, match="too long"):
        await stack.send("x" * 20_000)
    with pytest.raises(MessageRejected, match="empty"):
        await stack.send("   ")
    assert stack.emulator.state.requests == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_message_accepted_while_no_worker_runs_is_answered_later(redis_server: RedisServer,
                                                                       redis_client: object, backend: str) -> None:
    # Intake alone (as a process that dies right after acknowledging the platform would leave it)…
    async with Store.connect(redis_server.url) as redis:
        gateway = Gateway(store=Store(redis, keys=Keys(), limits=StoreLimits()),
                          config=stack_config(weather_url="http://127.0.0.1:9/w", tools_base="http://127.0.0.1:9"))
        message = InboundMessage(event_id="E-durable", conversation="console:t:durable", text="are you there?",
                                 place=Place(platform="console", workspace="t", channel="c", user="u"))
        await gateway.accept(message)
    # …then a new process on the same Redis answers it.
    async with open_stack(redis_server.url, backend=backend) as second:
        reply = await second.answer(message.id, timeout_s=20)
        assert reply.text.startswith("[emulator] You said: are you there?")


async def test_redis_unreachable_at_start_is_one_clear_error(redis_server: RedisServer) -> None:
    from core.config import parse_config
    from core.settings import Settings

    config = parse_config({"profiles": {"p": {"assistant_id": "asst_1"}}}, source="t", env={})
    with pytest.raises(StoreUnavailable, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        async with open_runtime(Settings(), config, redis_url="redis://127.0.0.1:1/0"):
            pass


def test_metrics_names_exist() -> None:
    from prometheus_client import generate_latest

    from core.metrics import REGISTRY

    text = generate_latest(REGISTRY).decode()
    for name in ("switchboard_messages_received", "switchboard_runs", "switchboard_tool_calls",
                 "switchboard_queue_depth", "switchboard_ack_seconds", "switchboard_time_to_first_text_seconds",
                 "switchboard_run_duration_seconds", "switchboard_tool_latency_seconds"):
        assert name in text
    assert json.dumps(text)  # plain text, serialisable
