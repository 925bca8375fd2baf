"""Each backend's stream, read by ``core.backends.sse`` under the real SDK request, against the
emulator and a server that sends hand-written SSE: every ending maps to the designed error
(dropped stream, read timeout, failed/expired/incomplete/cancelled runs, ``error`` events, HTTP
statuses with and without retries), and what is not an event of interest is skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from aiohttp import web
from openai import AsyncOpenAI

from core.backends.assistants import AssistantsBackend
from core.backends.catalog import AssistantCatalog
from core.backends.responses import ResponsesBackend
from core.config import ProfileConfig, ToolConfig
from core.emulator.assistants import AssistantsEmulator
from core.errors import BackendError, BackendRateLimited, BackendTimeout, BackendUnavailable, RunEnded
from core.models import RunCompleted, RunEvent, RunStarted, TextDelta, ToolCallsRequired
from core.ports import Backend, Turn
from tests.integration.harness import serve

KINDS = ("assistants", "responses")
TOOLS = {"get_weather": ToolConfig(url="http://127.0.0.1:9/weather")}


class FixedCatalog:
    """The catalog of a profile that names its assistant (no Redis)."""

    async def assistant_id(self, profile_name: str, profile: ProfileConfig) -> str:
        assert profile.assistant_id is not None
        return profile.assistant_id


def backend_for(kind: str, client: AsyncOpenAI) -> Backend:
    if kind == "assistants":
        return AssistantsBackend(name="a", client=client, catalog=cast(AssistantCatalog, FixedCatalog()))
    return ResponsesBackend(name="r", client=client, state="previous_response_id", tools=TOOLS)


def turn(text: str, *, assistant_id: str = "asst_x", thread_id: str | None = None) -> Turn:
    profile = ProfileConfig(model="m", assistant_id=assistant_id, tools=["get_weather"])
    return Turn(profile_name="p", profile=profile, thread_id=thread_id, text=text, message_id="m1")


async def collect(events: AsyncIterator[RunEvent]) -> list[RunEvent]:
    return [event async for event in events]


@pytest.fixture
async def emulator() -> AsyncIterator[AssistantsEmulator]:
    async with AssistantsEmulator(chunks=4) as emulator:
        yield emulator


Make = Callable[..., Any]


@pytest.fixture
async def ask(emulator: AssistantsEmulator) -> AsyncIterator[Make]:
    """``await ask(kind, text, read_timeout_s=…, retries=…)``: one run's events on a fresh client
    (whose only request is the run's)."""
    clients = [AsyncOpenAI(base_url=emulator.base_url, api_key="k")]
    assistant = await clients[0].beta.assistants.create(model="m", tools=[{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}])

    async def run(kind: str, text: str, *, read_timeout_s: float = 10.0, retries: int = 0) -> list[RunEvent]:
        client = AsyncOpenAI(base_url=emulator.base_url, api_key="k", timeout=read_timeout_s, max_retries=retries)
        clients.append(client)
        return await collect(backend_for(kind, client).run(turn=turn(text, assistant_id=assistant.id)))

    yield run
    for client in clients:
        await client.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_run_streams_its_text_and_ends_completed(ask: Make, kind: str) -> None:
    events = await ask(kind, "hello there")
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunCompleted)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "[emulator] You said: hello there (message 1 in this thread)"
    assert sum(isinstance(e, TextDelta) for e in events) == 4
    assert events[-1].usage is not None and events[-1].usage["total_tokens"] > 0
    assert events[-1].run.run_id == events[0].run.run_id


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_calls_end_the_stream(ask: Make, kind: str) -> None:
    events = await ask(kind, "what is the weather in Oslo and Lima?")
    paused = events[-1]
    assert isinstance(paused, ToolCallsRequired)
    assert [(c.name, c.arguments) for c in paused.calls] == [
        ("get_weather", '{"location": "Oslo"}'), ("get_weather", '{"location": "Lima"}')]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_dropped_stream_is_unavailable(ask: Make, kind: str) -> None:
    with pytest.raises(BackendUnavailable, match="backend connection failed"):
        await ask(kind, "hi !drop")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_that_stalls_past_the_read_timeout_times_out(ask: Make, kind: str) -> None:
    with pytest.raises(BackendTimeout):
        await ask(kind, "hi !slow=4", read_timeout_s=0.3)


@pytest.mark.parametrize(("kind", "directive", "status", "code"), [
    ("assistants", "!fail", "failed", "server_error"), ("assistants", "!expire", "expired", None),
    ("assistants", "!incomplete", "incomplete", "max_completion_tokens"),
    ("assistants", "!cancel", "cancelled", None),
    ("responses", "!fail", "failed", "server_error"), ("responses", "!incomplete", "incomplete", "max_output_tokens"),
])
async def test_runs_that_end_otherwise_raise_run_ended(
        ask: Make, kind: str, directive: str, status: str, code: str | None) -> None:
    with pytest.raises(RunEnded) as ended:
        await ask(kind, f"hi {directive}")
    assert (ended.value.status, ended.value.code) == (status, code)


async def test_a_responses_error_event_ends_the_run(ask: Make, emulator: AssistantsEmulator) -> None:
    emulator.responses.state.stream_errors = 1
    with pytest.raises(RunEnded) as ended:
        await ask("responses", "hi")
    assert (ended.value.status, ended.value.code) == ("failed", "server_error")


@pytest.mark.parametrize("kind", KINDS)
async def test_http_errors_are_retried_by_the_sdk_then_mapped(
        ask: Make, emulator: AssistantsEmulator, kind: str) -> None:
    emulator.fail_next(429)
    assert isinstance((await ask(kind, "hi", retries=1))[-1], RunCompleted)
    with pytest.raises(BackendUnavailable) as unavailable:
        await ask(kind, "hi !http=503")
    assert unavailable.value.status == 503
    emulator.fail_next(429, count=2)
    with pytest.raises(BackendRateLimited):
        await ask(kind, "hi", retries=1)


# --- hand-written streams -------------------------------------------------------------------------

RUN = '{"id": "run_1", "thread_id": "thread_1", "assistant_id": "asst_1", "status": "queued"}'


class Canned:
    """A server answering every POST with one fixed SSE body."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> AsyncOpenAI:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._answer)
        self._runner, base_url = await serve(app)
        self.client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="k", max_retries=0)
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.body.encode(), content_type="text/event-stream")


@pytest.mark.parametrize("error", [
    '{"code": "server_error", "message": "boom"}', '{"error": {"code": "server_error", "message": "boom"}}',
])
async def test_an_assistants_error_event_is_a_backend_error(error: str) -> None:
    body = f"event: thread.run.created\ndata: {RUN}\n\nevent: error\ndata: {error}\n\n"
    async with Canned(body) as client:
        events = backend_for("assistants", client).run(turn=turn("hi", thread_id="thread_1"))
        assert isinstance(await anext(events), RunStarted)
        with pytest.raises(BackendError, match="boom") as raised:
            await anext(events)
    assert raised.value.code == "server_error"
    assert not isinstance(raised.value, BackendUnavailable)


async def test_an_assistants_stream_without_its_end_is_unavailable() -> None:
    body = f"event: thread.run.created\r\ndata: {RUN}\r\n\r\nevent: done\r\ndata: [DONE]\r\n\r\n"
    async with Canned(body) as client:
        with pytest.raises(BackendUnavailable, match="ended before the run finished"):
            await collect(backend_for("assistants", client).run(turn=turn("hi", thread_id="thread_1")))


async def test_a_responses_server_that_sends_only_data_lines() -> None:
    response = '{"id": "resp_1", "status": "%s", "output": %s, "usage": {"total_tokens": 3}}'
    message = '[{"type": "message", "content": [{"type": "output_text", "text": "Hi you"}]}]'
    body = "".join(f"data: {data}\n\n" for data in [
        '{"type": "response.created", "response": %s}' % (response % ("in_progress", "[]")),
        '{"type": "response.output_item.added", "item": {"type": "message", "content": []}}',
        '{"type": "response.output_text.delta", "delta": "Hi "}',
        '{"type": "response.output_text.delta",\ndata: "delta": "you"}',  # data on two lines
        '{"type": "response.completed", "response": %s}' % (response % ("completed", message)),
        "[DONE]",
    ]).replace("data: [DONE]", ": keep-alive\n\ndata: [DONE]")
    async with Canned(body) as client:
        events = await collect(backend_for("responses", client).run(turn=turn("hi")))
    assert [type(e) for e in events] == [RunStarted, TextDelta, TextDelta, RunCompleted]
    completed = events[-1]
    assert isinstance(completed, RunCompleted)
    assert completed.run.run_id == completed.run.thread_id == "resp_1"
    assert completed.usage == {"total_tokens": 3}
