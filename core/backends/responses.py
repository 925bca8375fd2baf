"""The Responses API backend, on the official SDK's ``AsyncOpenAI().responses`` (streamed).

Every request carries the profile (model, instructions, tools, …). Where the conversation
lives is the backend's ``state``, and the conversation's *thread* is what core stores for it:

- ``conversations``: a Conversations object, created and recorded before the first response
  (``ConversationsBackend``); the thread is its ID.
- ``previous_response_id``: each request chains from the last response; the thread is that
  response's ID, advanced when an answer completes (``RunCompleted`` carries the new one).
- ``replay``: the gateway keeps the history in Redis (``ReplayHistory``) and sends it with every
  request (``store: false``); the thread is a key this backend makes up.

In each mode a turn enters the context only when its answer completes. A response that asks for
function calls is complete: the engine answers them through ``submit_tool_outputs``, which sends
all outputs in one new request (chained the same way) and streams that response. The turn is
remembered in memory, by the ID of its latest response, until it completes or is cancelled;
``resume`` re-attaches to a response whose stream was cut (``core.ports.Resumable``).

A response's stream is requested through the SDK (``with_streaming_response``) and read with
``core.backends.sse``: only the events used are decoded, as plain JSON (no SDK models), and the
body is read to its end so the next request reuses the connection.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
from openai import AsyncOpenAI
from openai.types.responses import Response

from core.backends.errors import STREAM_ERRORS, ended, translate
from core.backends.responses_history import ReplayHistory
from core.backends.responses_request import (
    Item,
    function_outputs,
    output_text,
    replay_items,
    request_options,
    tool_calls,
    user_message,
)
from core.backends.sse import Event, EventStream
from core.config import ToolConfig
from core.errors import BackendError, BackendNotFound, BackendUnavailable, RunEnded
from core.models import (
    RunCompleted,
    RunEvent,
    RunRef,
    RunStarted,
    TextDelta,
    ToolCall,
    ToolCallsRequired,
    ToolOutput,
)
from core.ports import Turn

log = logging.getLogger(__name__)

State = Literal["conversations", "previous_response_id", "replay"]
STOPPED_OUTPUT = '{"error": "the answer was stopped before this call was made"}'
_DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta"})
_ENDINGS = frozenset({"response.failed", "response.incomplete", "error"})
_STREAM_EVENTS = frozenset({"response.created", "response.completed", *_DELTAS, *_ENDINGS})
"""The stream events ``_respond`` reads; output items, content parts, ``….done`` and the like are skipped."""
MAX_TURNS = 10_000
"""Responses of unfinished turns remembered at most; the oldest is forgotten first (an abandoned answer)."""


class TurnNotResumable(BackendError):
    user_message = "The answer was interrupted and cannot be continued; please ask again."


@dataclass
class _Answer:
    """One message being answered: what each of its requests needs."""

    thread_id: str | None
    options: dict[str, Any]
    conversation: str | None = None
    lease_token: str | None = None
    history: list[Item] = field(default_factory=list)
    """``replay``: the stored history, sent before this turn's items."""
    items: list[Item] = field(default_factory=list)
    """This turn's input items so far: the user message, the responses' outputs, tool outputs."""
    response_ids: list[str] = field(default_factory=list)
    """The turn's responses: the engine refers to the turn by the first or a paused one."""
    pending: list[ToolCall] = field(default_factory=list)
    """The function calls the latest response asked for."""
    shown: str = ""
    """The text of the turn's finished responses (a resumed answer is written again from the start)."""
    finished: set[str] = field(default_factory=set)
    started: bool = False
    adopted: bool = False
    """Resumed from what the server stored, in a process that did not start it (no options)."""


class ResponsesBackend:
    """``core.ports.Backend`` for the Responses API: OpenAI, and servers that speak it (vLLM, Ollama, …)."""

    poll_interval_s = 0.25

    def __init__(
        self, *, name: str, client: AsyncOpenAI, state: State, tools: Mapping[str, ToolConfig],
        history: ReplayHistory | None = None,
    ) -> None:
        if state == "replay" and history is None:
            raise ValueError("state: replay needs a ReplayHistory")
        self.name = name
        self.client = client
        self.state = state
        self.tools = tools
        self.history = history
        self._answers: OrderedDict[str, _Answer] = OrderedDict()

    async def run(self, *, turn: Turn) -> AsyncIterator[RunEvent]:
        answer = await self._begin(turn)
        answer.items.append(user_message(turn.text))
        async for event in self._respond(answer, self._request(answer, answer.items, previous=turn.thread_id)):
            yield event

    async def submit_tool_outputs(self, *, run: RunRef, outputs: list[ToolOutput]) -> AsyncIterator[RunEvent]:
        answer = self._answers.get(run.run_id)
        if answer is None or not answer.pending or answer.adopted:
            raise TurnNotResumable(f"response {run.run_id} is not waiting for tool outputs in this process")
        answer.pending = []
        items = function_outputs(outputs)
        answer.items += items
        async for event in self._respond(answer, self._request(answer, items, previous=run.run_id)):
            yield event

    async def cancel(self, *, run: RunRef) -> None:
        """Nothing runs on the server between requests: forget the turn, if this process knows it.

        In a conversation, function calls would stay unanswered and the server would refuse every
        later request on it: they are answered with an error output first.
        """
        answer = self._answers.get(run.run_id)
        if answer is None:
            return
        self._forget(answer)
        if self.state != "conversations" or not answer.pending:
            return
        stopped = [ToolOutput(call_id=call.call_id, output=STOPPED_OUTPUT, ok=False) for call in answer.pending]
        items: Any = function_outputs(stopped)  # the SDK's TypedDict params describe the same JSON
        try:
            await self.client.conversations.items.create(answer.thread_id or "", items=items)
        except openai.APIError as exc:
            raise translate(exc) from exc

    async def resume(self, *, run: RunRef) -> AsyncIterator[RunEvent]:
        """Re-attach to a response whose stream was cut (``core.ports.Resumable``): the stored response
        is awaited and the turn's text so far yielded as one delta, then the turn goes on. ``replay``
        stores nothing: its request is sent again, by the process that knows the turn."""
        answer = self._answers.get(run.run_id)
        if self.state == "replay":
            if answer is None:
                raise TurnNotResumable(f"response {run.run_id}: a replayed turn is only known to its process")
            if answer.shown:
                yield TextDelta(text=answer.shown)
            async for event in self._respond(answer, self._request(answer, [], previous=None)):
                yield event
            return
        found = await self._settled(run.run_id)
        response: dict[str, Any] = found.to_dict()  # the stream's JSON shape (a rare path: no need to skip the model)
        if answer is None:
            answer = _Answer(thread_id=run.thread_id, options={}, started=True, adopted=True)
        if text := answer.shown + ("" if found.id in answer.finished else found.output_text):
            yield TextDelta(text=text)
        if found.status != "completed":
            self._forget(answer)
            raise ended(str(found.status), response, error_field="error")
        yield await self._finish(answer, response)

    async def _begin(self, turn: Turn) -> _Answer:
        options = request_options(turn.profile_name, turn.profile, self.tools, message_id=turn.message_id)
        answer = _Answer(turn.thread_id, options, conversation=turn.conversation, lease_token=turn.lease_token)
        if self.state == "conversations" and answer.thread_id is None:
            answer.thread_id = await self._new_conversation()
        elif self.state == "replay":
            assert self.history is not None
            answer.thread_id = answer.thread_id or f"replay_{uuid.uuid4().hex}"
            answer.conversation = answer.conversation or answer.thread_id
            answer.history = await self.history.load(answer.conversation, answer.thread_id)
        return answer

    def _request(self, answer: _Answer, new_items: list[Item], *, previous: str | None) -> dict[str, Any]:
        """The request body: the profile's options and the conversation, as this backend's state carries it."""
        if self.state == "conversations":
            return {**answer.options, "conversation": answer.thread_id, "input": new_items, "store": True}
        if self.state == "previous_response_id":
            chain = {"previous_response_id": previous} if previous else {}
            return {**answer.options, **chain, "input": new_items, "store": True}
        return {**answer.options, "input": answer.history + answer.items, "store": False}

    async def _respond(self, answer: _Answer, request: dict[str, Any]) -> AsyncIterator[RunEvent]:
        """Stream one response: its text as it comes, then what the engine must do next."""
        response: dict[str, Any] | None = None
        try:
            async with self.client.responses.with_streaming_response.create(stream=True, **request) as http:
                stream = EventStream(http.iter_bytes(), _STREAM_EVENTS)
                async for event in stream:
                    if event.name in _DELTAS:
                        if delta := event.data.get("delta"):
                            yield TextDelta(text=delta)
                    elif event.name == "response.created":
                        if (started := self._created(answer, event.data["response"]["id"])) is not None:
                            yield started
                    elif event.name == "response.completed":
                        response = event.data["response"]
                        await stream.finish()
                        break
                    else:
                        self._forget(answer)  # the turn is over: the engine will not come back to it
                        raise _ended_by(event)
        except STREAM_ERRORS as exc:
            raise _translate(exc) from exc
        if response is None:
            raise BackendUnavailable("the backend's stream ended before the response finished")
        yield await self._finish(answer, response)

    def _created(self, answer: _Answer, response_id: str) -> RunStarted | None:
        """Track the turn by its new response; ``RunStarted`` for its first (a new chain's thread)."""
        self._remember(response_id, answer)
        if answer.thread_id is None:
            answer.thread_id = response_id
        if answer.started:
            return None
        answer.started = True
        return RunStarted(run=self._ref(answer.thread_id, response_id))

    async def _finish(self, answer: _Answer, response: Mapping[str, Any]) -> RunEvent:
        """What a completed response (its JSON) means: tool calls to answer, or the turn's end."""
        response_id: str = response["id"]
        output = response.get("output") or []
        if response_id not in answer.finished:  # a resumed response may have finished before
            answer.finished.add(response_id)
            answer.items += replay_items(output)
            answer.shown += output_text(output)
        thread_id = answer.thread_id or response_id
        calls = tool_calls(output)
        if calls:
            if answer.adopted:
                raise TurnNotResumable(f"response {response_id} of another process waits for tool outputs")
            answer.pending = calls
            return ToolCallsRequired(run=self._ref(thread_id, response_id), calls=calls)
        self._forget(answer)
        if self.history is not None:
            await self.history.append(answer.conversation or thread_id, thread_id, answer.items,
                                      lease_token=answer.lease_token)
        if self.state == "previous_response_id":
            thread_id = response_id  # the next message chains from the last response of this one
        return RunCompleted(run=self._ref(thread_id, response_id), usage=response.get("usage"))

    async def _settled(self, response_id: str) -> Response:
        """The stored response once it stopped working (the engine bounds the wait by the run's deadline)."""
        while True:
            try:
                response = await self.client.responses.retrieve(response_id)
            except openai.APIError as exc:
                raise _translate(exc) from exc
            if response.status not in ("queued", "in_progress"):
                return response
            await asyncio.sleep(self.poll_interval_s)

    def _remember(self, response_id: str, answer: _Answer) -> None:
        answer.response_ids.append(response_id)
        self._answers[response_id] = answer
        while len(self._answers) > MAX_TURNS:
            forgotten, _ = self._answers.popitem(last=False)
            log.warning("forgot an unfinished turn", extra={
                "event": "turn_forgotten", "backend": self.name, "run_id": forgotten})

    def _forget(self, answer: _Answer) -> None:
        for response_id in answer.response_ids:
            self._answers.pop(response_id, None)

    def _ref(self, thread_id: str, response_id: str) -> RunRef:
        return RunRef(backend=self.name, thread_id=thread_id, run_id=response_id)

    async def _new_conversation(self) -> str:
        try:
            return (await self.client.conversations.create()).id
        except openai.NotFoundError as exc:
            raise BackendNotFound("the backend has no Conversations API (HTTP 404 on /conversations): "
                                  "use state: previous_response_id or replay", status=404) from exc
        except openai.APIError as exc:
            raise translate(exc) from exc


class ConversationsBackend(ResponsesBackend):
    """``state: conversations``, whose threads live on the server (``core.ports.ServerThreads``): the
    engine creates and records a conversation's Conversations object before its first response."""

    def __init__(self, *, name: str, client: AsyncOpenAI, tools: Mapping[str, ToolConfig]) -> None:
        super().__init__(name=name, client=client, state="conversations", tools=tools)

    async def new_thread(self) -> str:
        return await self._new_conversation()

    async def find_run(self, *, thread_id: str, message_id: str) -> RunRef | None:
        """Responses cannot be looked up by message: None, so an unseen response is started again."""
        return None


def _ended_by(event: Event) -> BackendError | RunEnded:
    """The error of an event that ends the response other than completed (one of ``_ENDINGS``)."""
    if event.name == "error":
        data = event.data
        if isinstance(data.get("error"), dict):  # an error object, as the SDK's stream raised it
            error = data["error"]
            return BackendError(f"backend error: {error.get('message')}", code=error.get("code"))
        return RunEnded("failed", code=data.get("code"), detail=data.get("message"))
    response = event.data.get("response") or {}
    return ended(str(response.get("status") or event.name.removeprefix("response.")), response, error_field="error")


def _translate(exc: BaseException) -> BackendError:
    """``translate``, except that a context the server can no longer continue is ``BackendNotFound``,
    so the engine starts the conversation over (see ``_unusable_context``)."""
    if isinstance(exc, openai.BadRequestError) and _unusable_context(exc):
        return BackendNotFound(f"backend answered HTTP 400: {exc.message}", status=400,
                               code=getattr(exc, "code", None))
    return translate(exc)


def _unusable_context(exc: openai.BadRequestError) -> bool:
    """The chained-from response or the conversation is gone (stored responses expire), or it ends
    in function calls nobody answered (a process died between a response and its tool outputs)."""
    code, param, message = getattr(exc, "code", None), getattr(exc, "param", None), exc.message.lower()
    if code == "previous_response_not_found" or "no tool output found" in message:
        return True
    return param in ("previous_response_id", "conversation") and "not found" in message
