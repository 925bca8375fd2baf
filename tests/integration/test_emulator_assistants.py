"""The Assistants API emulator, driven only through the real ``AsyncOpenAI`` client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncAssistantEventHandler, AsyncOpenAI
from openai.types.beta.threads import Run, Text, TextDelta
from openai.types.beta.threads.runs import ToolCall

from core.emulator import script
from core.emulator.assistants import AssistantsEmulator

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city",
                 "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}},
}
LOOKUP_TOOL: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
TEXT_RUN_EVENTS = [
    "thread.run.created", "thread.run.queued", "thread.run.in_progress",
    "thread.run.step.created", "thread.run.step.in_progress",
    "thread.message.created", "thread.message.in_progress",
    *["thread.message.delta"] * 4,
    "thread.message.completed", "thread.run.step.completed", "thread.run.completed",
]


@pytest.fixture
async def emulator() -> AsyncIterator[AssistantsEmulator]:
    async with AssistantsEmulator(chunks=4, expiry_s=0.3) as emu:
        yield emu


@pytest.fixture
async def client(emulator: AssistantsEmulator) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=emulator.base_url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def assistant_id(client: AsyncOpenAI) -> str:
    created = await client.beta.assistants.create(
        model="emu-model", name="Helper", instructions="Be brief.", tools=[WEATHER_TOOL, LOOKUP_TOOL],
    )
    return created.id


async def _events(stream: Any) -> tuple[list[str], list[Any]]:
    names, data = [], []
    async for event in stream:
        names.append(event.event)
        data.append(event.data)
    return names, data


async def _requires_action(client: AsyncOpenAI, assistant_id: str, text: str) -> Run:
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": text}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id, poll_interval_ms=10,
    )
    assert run.status == "requires_action"
    return run


async def test_assistant_crud_keeps_every_field(client: AsyncOpenAI) -> None:
    fields: dict[str, Any] = {
        "model": "emu-model", "name": "Support", "description": "Answers support questions",
        "instructions": "Be kind.", "tools": [WEATHER_TOOL, {"type": "file_search"}],
        "tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}}, "metadata": {"team": "support"},
        "temperature": 0.3, "top_p": 0.9, "response_format": {"type": "json_object"}, "reasoning_effort": "low",
    }
    created = await client.beta.assistants.create(**fields)
    fetched = (await client.beta.assistants.retrieve(created.id)).model_dump()
    updated = await client.beta.assistants.update(created.id, instructions="Be very kind.")
    deleted = await client.beta.assistants.delete(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.beta.assistants.retrieve(created.id)

    scalars = ("model", "name", "description", "instructions", "metadata", "temperature", "top_p",
               "reasoning_effort")
    assert {name: fetched[name] for name in scalars} == {name: fields[name] for name in scalars}
    assert [tool["type"] for tool in fetched["tools"]] == ["function", "file_search"]
    assert fetched["tools"][0]["function"]["name"] == "get_weather"
    assert fetched["tool_resources"]["file_search"]["vector_store_ids"] == ["vs_1"]
    assert fetched["response_format"] == {"type": "json_object"}
    assert (updated.instructions, updated.name, updated.temperature) == ("Be very kind.", "Support", 0.3)
    assert deleted.deleted is True
    assert caught.value.body == {"message": f"No assistant found with id '{created.id}'.",
                                 "type": "invalid_request_error", "param": None, "code": None}


async def test_list_pages_through_hundreds_with_cursors(client: AsyncOpenAI) -> None:
    ids = [(await client.beta.assistants.create(model="emu-model", name=f"a{i}")).id for i in range(250)]
    seen = [a.id async for a in client.beta.assistants.list()]
    ascending = [a.id async for a in client.beta.assistants.list(order="asc", limit=100)]
    page = await client.beta.assistants.list(order="asc", limit=10, after=ids[99])
    before = await client.beta.assistants.list(order="asc", limit=5, before=ids[10])
    last = await client.beta.assistants.list(order="asc", limit=100, after=ids[199])
    with pytest.raises(openai.BadRequestError):
        await client.beta.assistants.list(limit=101)

    assert seen == list(reversed(ids))
    assert ascending == ids
    assert [a.id for a in page.data] == ids[100:110] and page.has_more is True
    assert [a.id for a in before.data] == ids[5:10]
    assert len(last.data) == 50 and last.has_more is False


async def test_create_and_run_streams_events_in_order(client: AsyncOpenAI, assistant_id: str) -> None:
    stream = await client.beta.threads.create_and_run(
        assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "hello there"}]}, stream=True,
    )
    names, data = await _events(stream)

    assert names == ["thread.created", *TEXT_RUN_EVENTS]
    text = "".join(d.delta.content[0].text.value for n, d in zip(names, data, strict=True)
                   if n == "thread.message.delta")
    assert text == "[emulator] You said: hello there (message 1 in this thread)"
    final = data[-1]
    assert final.status == "completed" and final.usage is not None and final.usage.total_tokens > 0
    messages = await client.beta.threads.messages.list(thread_id=final.thread_id, order="asc")
    assert [m.role for m in messages.data] == ["user", "assistant"]
    assert messages.data[1].content[0].text.value == text  # type: ignore[union-attr]


async def test_run_with_additional_messages_reuses_thread_and_applies_overrides(
    client: AsyncOpenAI, emulator: AssistantsEmulator, assistant_id: str,
) -> None:
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "first"}])
    first = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id, poll_interval_ms=10)
    stream = await client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant_id, stream=True,
        additional_messages=[{"role": "user", "content": "second"}],
        model="emu-override", additional_instructions="Answer in French.", temperature=0.2,
        max_completion_tokens=500, truncation_strategy={"type": "last_messages", "last_messages": 3},
        metadata={"conversation": "c1"},
    )
    names, data = await _events(stream)

    assert names == TEXT_RUN_EVENTS
    assert data[-1].status == "completed" and first.status == "completed"
    answers = await client.beta.threads.messages.list(thread_id=thread.id, run_id=data[-1].id)
    assert answers.data[0].content[0].text.value.endswith("You said: second (message 2 in this thread)")  # type: ignore[union-attr]
    used = emulator.run(data[-1].id)
    assert (used.model, used.instructions) == ("emu-override", "Be brief.\n\nAnswer in French.")
    assert (emulator.run(first.id).model, emulator.run(first.id).instructions) == ("emu-model", "Be brief.")
    run = await client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=data[-1].id)
    assert (run.temperature, run.max_completion_tokens, run.metadata) == (0.2, 500, {"conversation": "c1"})
    assert run.truncation_strategy is not None and run.truncation_strategy.last_messages == 3


async def test_weather_requires_action_then_streams_tool_outputs(client: AsyncOpenAI, assistant_id: str) -> None:
    thread = await client.beta.threads.create()
    stream = await client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant_id, stream=True,
        additional_messages=[{"role": "user", "content": "What's the weather in Paris and New York?"}],
    )
    names, data = await _events(stream)
    assert names[-1] == "thread.run.requires_action" and "thread.run.step.delta" in names
    assert data[-1].required_action is not None
    calls = data[-1].required_action.submit_tool_outputs.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", '{"location": "Paris"}'), ("get_weather", '{"location": "New York"}')]

    outputs: Any = [{"tool_call_id": c.id, "output": f"sunny in {c.function.arguments[14:-2]}"} for c in calls]
    stream = await client.beta.threads.runs.submit_tool_outputs(
        thread_id=thread.id, run_id=data[-1].id, tool_outputs=outputs, stream=True)
    names, data = await _events(stream)

    assert names[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert names[-1] == "thread.run.completed"
    text = "".join(d.delta.content[0].text.value for n, d in zip(names, data, strict=True)
                   if n == "thread.message.delta")
    assert text == "[emulator] The tool said: sunny in Paris\n[emulator] The tool said: sunny in New York"
    steps = await client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=data[-1].id, order="asc")
    assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]


async def test_sdk_stream_helpers_and_event_handler(client: AsyncOpenAI, assistant_id: str) -> None:
    class Recorder(AsyncAssistantEventHandler):
        def __init__(self) -> None:
            super().__init__()
            self.deltas: list[str] = []
            self.done: list[str] = []
            self.calls: list[str] = []

        async def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
            self.deltas.append(delta.value or "")

        async def on_text_done(self, text: Text) -> None:
            self.done.append(text.value)

        async def on_tool_call_created(self, tool_call: ToolCall) -> None:
            self.calls.append(tool_call.function.name)  # type: ignore[union-attr]

    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "call lookup {not json"}])
    first = Recorder()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, event_handler=first) as stream:
        await stream.until_done()
    run = await first.get_final_run()
    assert run.status == "requires_action" and first.calls == ["lookup"]
    call = run.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
    assert call.function.arguments == "{not json"

    second = Recorder()
    async with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "found it"}],
        event_handler=second) as stream:
        await stream.until_done()
    assert "".join(second.deltas) == "[emulator] The tool said: found it"
    assert second.done == ["[emulator] The tool said: found it"]
    assert (await second.get_final_run()).status == "completed"


async def test_tool_outputs_must_answer_each_call_exactly_once(client: AsyncOpenAI, assistant_id: str) -> None:
    run = await _requires_action(client, assistant_id, "weather in Oslo, Rome")
    ids = [c.id for c in run.required_action.submit_tool_outputs.tool_calls]  # type: ignore[union-attr]
    for bad in ([ids[0]], [ids[0], ids[0]], [*ids, "call_unknown"]):
        with pytest.raises(openai.BadRequestError):
            await client.beta.threads.runs.submit_tool_outputs(
                thread_id=run.thread_id, run_id=run.id,
                tool_outputs=[{"tool_call_id": i, "output": "x"} for i in bad])
    done = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=run.thread_id, run_id=run.id, poll_interval_ms=10,
        tool_outputs=[{"tool_call_id": i, "output": "x"} for i in ids])
    assert done.status == "completed"


async def test_thread_with_active_run_refuses_messages_and_runs(
    client: AsyncOpenAI, emulator: AssistantsEmulator, assistant_id: str,
) -> None:
    run = await _requires_action(client, assistant_id, "weather in Lyon")
    assert emulator.state.active_run_conflicts == 0
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.messages.create(thread_id=run.thread_id, role="user", content="again")
    assert caught.value.body == {"message": f"Thread {run.thread_id} already has an active run {run.id}.",
                                 "type": "invalid_request_error", "param": None, "code": None}
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.create(thread_id=run.thread_id, assistant_id=assistant_id)
    assert emulator.state.active_run_conflicts == 2
    assert [r.status for r in emulator.state.requests[-2:]] == [400, 400]


async def test_unanswered_tool_calls_expire(client: AsyncOpenAI, emulator: AssistantsEmulator,
                                            assistant_id: str) -> None:
    run = await _requires_action(client, assistant_id, "weather in Paris")
    await asyncio.sleep(0.5)
    # The background sweep expires it with no request touching the run.
    assert emulator.run(run.id).status == "expired"
    fetched = await client.beta.threads.runs.retrieve(thread_id=run.thread_id, run_id=run.id)
    assert fetched.status == "expired" and fetched.required_action is None
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.submit_tool_outputs(
            thread_id=run.thread_id, run_id=run.id, tool_outputs=[{"tool_call_id": "call_x", "output": "x"}])
    await client.beta.threads.messages.create(thread_id=run.thread_id, role="user", content="thread is free")


async def test_cancel_goes_through_cancelling(client: AsyncOpenAI, assistant_id: str) -> None:
    run = await _requires_action(client, assistant_id, "weather in Paris")
    cancelling = await client.beta.threads.runs.cancel(thread_id=run.thread_id, run_id=run.id)
    assert cancelling.status == "cancelling"
    final = await client.beta.threads.runs.poll(thread_id=run.thread_id, run_id=run.id, poll_interval_ms=10)
    assert final.status == "cancelled" and final.cancelled_at is not None

    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "take your time !slow=2"}])
    slow = await client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    await asyncio.sleep(0.1)
    assert (await client.beta.threads.runs.cancel(thread_id=thread.id, run_id=slow.id)).status == "cancelling"
    final = await client.beta.threads.runs.poll(thread_id=thread.id, run_id=slow.id, poll_interval_ms=10)
    assert final.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.cancel(thread_id=thread.id, run_id=slow.id)


@pytest.mark.parametrize(("directive", "status", "last_event"), [
    ("!fail", "failed", "thread.run.failed"),
    ("!incomplete", "incomplete", "thread.run.incomplete"),
    ("!expire", "expired", "thread.run.expired"),
    ("!cancel", "cancelled", "thread.run.cancelled"),
])
async def test_directives_end_runs(client: AsyncOpenAI, assistant_id: str, directive: str, status: str,
                                   last_event: str) -> None:
    stream = await client.beta.threads.create_and_run(
        assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": f"hi {directive}"}]},
        stream=True)
    names, data = await _events(stream)
    assert names[-1] == last_event and data[-1].status == status
    if status == "failed":
        assert data[-1].last_error.code == "server_error"
    if status == "incomplete":
        assert data[-1].incomplete_details.reason == "max_completion_tokens"
        assert "thread.message.incomplete" in names


async def test_sdk_retries_injected_429(client: AsyncOpenAI, emulator: AssistantsEmulator) -> None:
    emulator.fail_next(429)
    with pytest.raises(openai.RateLimitError):
        await client.beta.threads.create()

    emulator.fail_next(429)
    retrying = client.with_options(max_retries=2)
    thread = await retrying.beta.threads.create()
    assert thread.id.startswith("thread_")
    assert [r.status for r in emulator.state.requests[-3:]] == [429, 429, 200]
    assert emulator.state.requests[-1].path == "/v1/threads"


async def test_http_directive_answers_the_request_itself(client: AsyncOpenAI, assistant_id: str) -> None:
    thread = await client.beta.threads.create()
    with pytest.raises(openai.InternalServerError):
        await client.beta.threads.messages.create(thread_id=thread.id, role="user", content="x !http=500")
    with pytest.raises(openai.AuthenticationError):
        await client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant_id,
            additional_messages=[{"role": "user", "content": "y !http=401"}])
    assert (await client.beta.threads.messages.list(thread_id=thread.id)).data == []


async def test_polled_run_goes_queued_in_progress_completed(client: AsyncOpenAI, assistant_id: str) -> None:
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "poll me !slow=0.3"}])
    run = await client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    seen = [run.status]
    deadline = time.monotonic() + 5
    while seen[-1] not in ("completed", "failed") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        seen.append((await client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id)).status)
    assert seen[0] == "queued" and "in_progress" in seen and seen[-1] == "completed"
    answer = (await client.beta.threads.messages.list(thread_id=thread.id)).data[0]
    assert answer.role == "assistant" and answer.run_id == run.id


async def test_drop_cuts_the_stream_but_the_run_completes(
    client: AsyncOpenAI, emulator: AssistantsEmulator, assistant_id: str,
) -> None:
    stream = await client.beta.threads.create_and_run(
        assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "bye !drop"}]}, stream=True)
    names: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for event in stream:
            names.append(event.event)
    assert "thread.message.delta" in names and "thread.run.completed" not in names
    run_id = next(r for r in emulator.state.runs)
    await asyncio.sleep(0.05)
    assert emulator.run(run_id).status == "completed"


async def test_latency_is_counted_as_backend_time(assistant_id: str, client: AsyncOpenAI,
                                                  emulator: AssistantsEmulator) -> None:
    emulator.engine.latency_s = 0.1
    started = time.monotonic()
    await client.beta.threads.create_and_run_poll(
        assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "hi"}]}, poll_interval_ms=10)
    assert 0.1 <= emulator.backend_seconds <= time.monotonic() - started


def test_long_answers_have_the_requested_size_and_a_code_block() -> None:
    reply = script.reply_to("!long=3000 write a lot", user_messages=1, functions=set())
    assert len(reply.text) == 3000 and reply.text.startswith("[emulator] ")
    assert reply.text.count("```python") == 1 and reply.text.count("```") == 2
    assert "\n\n" in reply.text


@pytest.mark.parametrize(("text", "functions", "expected"), [
    ("weather in Paris and London!", {"get_weather"},
     [("get_weather", '{"location": "Paris"}'), ("get_weather", '{"location": "London"}')]),
    ("what's the weather like?", {"get_weather"}, [("get_weather", '{"location": "Paris"}')]),
    ("weather in Rome", {"lookup"}, []),
    ("please call lookup {\"q\": 1} !slow=0.1", {"lookup"}, [("lookup", '{"q": 1}')]),
    ("call missing {}", {"lookup"}, []),
])
def test_script_tool_rules(text: str, functions: set[str], expected: list[tuple[str, str]]) -> None:
    reply = script.reply_to(text, user_messages=1, functions=functions)
    assert [(c.name, c.arguments) for c in reply.calls] == expected
    assert bool(reply.text) == (not expected)


def test_script_directives_and_chunks() -> None:
    parsed = script.parse_directives("x !slow=1.5 !http=429 !drop !long=oops !http=200")
    assert (parsed.slow_s, parsed.http_status, parsed.drop, parsed.long_chars) == (1.5, None, True, None)
    assert script.parse_directives("!http=503 !fail").http_status == 503
    assert script.strip_directives("hi  !fail there") == "hi there"
    assert script.split_chunks("abcdefghij", 4) == ["abc", "def", "gh", "ij"]
    assert script.split_chunks("ab", 8) == ["a", "b"]
