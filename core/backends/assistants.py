"""The Assistants API v2 backend, on the official SDK's ``AsyncOpenAI`` (streaming runs).

One backend request per message: a run with the message as ``additional_messages``. Both the
user message and the run carry ``metadata.switchboard_message`` (the gateway's message ID), so a
recovering process can find the run an interrupted attempt started (``find_run``) instead of
starting a second one, and re-attach to it (``resume``).

A conversation's thread is created on its own (``new_thread``) before its first run, so the
gateway can record it before anything is started on it: with create-and-run, a process that
died before the stream's first event would leave a run on a thread nobody knows, and the next
attempt could only start a second run. That costs one request per *conversation*, not per message.

A run's stream is requested through the SDK (``with_streaming_response``: auth, retries, HTTP
errors) and read with ``core.backends.sse``: only the events used are decoded, as plain JSON, and
the body is read to its end so the connection is reused by the next run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import openai
from openai import AsyncAPIResponse, AsyncOpenAI
from openai.types.beta.threads import Run
from redis.exceptions import RedisError

from core.backends.catalog import AssistantCatalog
from core.backends.errors import STREAM_ERRORS, ended, translate
from core.backends.sse import Event, EventStream
from core.errors import (
    BackendBadRequest,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    StoreUnavailable,
)
from core.models import RunCompleted, RunEvent, RunRef, RunStarted, TextDelta, ToolCall, ToolCallsRequired, ToolOutput
from core.ports import Turn

log = logging.getLogger(__name__)

_TERMINAL_FAILURES = {
    "thread.run.failed": "failed",
    "thread.run.cancelled": "cancelled",
    "thread.run.expired": "expired",
    "thread.run.incomplete": "incomplete",
}
_STREAM_EVENTS = frozenset({
    "thread.run.created", "thread.message.delta", "thread.run.requires_action", "thread.run.completed",
    *_TERMINAL_FAILURES, "error",
})
"""The stream events ``_map`` reads; the ~15 others of a run (steps, message created/completed, …) are skipped."""
_WORKING = frozenset({"queued", "in_progress", "cancelling"})
MESSAGE_TAG = "switchboard_message"
# How many of a thread's latest runs ``find_run`` looks at: a conversation runs one at a time,
# so the run of the message being recovered is among the last few.
_FIND_RUN_WINDOW = 20


def run_overrides(turn: Turn) -> dict[str, Any]:
    """The profile's per-run overrides that are set, as SDK keyword arguments."""
    p = turn.profile
    fields = {
        "model": p.model, "temperature": p.temperature, "top_p": p.top_p,
        "max_prompt_tokens": p.max_prompt_tokens, "max_completion_tokens": p.max_completion_tokens,
        "truncation_strategy": p.truncation_strategy, "tool_choice": p.tool_choice,
    }
    return {k: v for k, v in fields.items() if v is not None}


class AssistantsBackend:
    """``core.ports.Backend`` for servers that keep the Assistants API v2."""

    def __init__(
        self, *, name: str, client: AsyncOpenAI, catalog: AssistantCatalog,
        poll_interval_s: float = 0.5, settle_timeout_s: float = 600.0, cancel_timeout_s: float = 15.0,
    ) -> None:
        self.name = name
        self.client = client
        self.catalog = catalog
        self.poll_interval_s = poll_interval_s
        self.settle_timeout_s = settle_timeout_s
        self.cancel_timeout_s = cancel_timeout_s

    async def run(self, *, turn: Turn) -> AsyncIterator[RunEvent]:
        try:
            assistant_id = await self.catalog.assistant_id(turn.profile_name, turn.profile)
        except RedisError as exc:
            # The catalog caches assistant IDs in Redis: unreachable, this attempt stops and the
            # message waits for the next one (never an error answer for a Redis restart).
            raise StoreUnavailable(f"assistant catalog: {type(exc).__name__}") from exc
        tag = {MESSAGE_TAG: turn.message_id}
        # Plain dicts: the SDK's TypedDict params describe the same JSON.
        message: Any = {"role": "user", "content": turn.text, "metadata": tag}
        overrides = run_overrides(turn)
        threads = self.client.beta.threads
        opener: _Opener
        if turn.thread_id is None and not turn.profile.additional_instructions:
            opener = threads.with_streaming_response.create_and_run(
                assistant_id=assistant_id, thread={"messages": [message]}, stream=True, metadata=tag, **overrides,
            )
        else:
            thread_id = turn.thread_id or await self.new_thread()
            if turn.profile.additional_instructions:
                overrides["additional_instructions"] = turn.profile.additional_instructions
            opener = threads.runs.with_streaming_response.create(
                thread_id, assistant_id=assistant_id, additional_messages=[message], stream=True, metadata=tag,
                **overrides,
            )
        async for event in self._stream(opener, assistant_id):
            yield event

    async def new_thread(self) -> str:
        """An empty thread for a new conversation (recorded by the caller before any run)."""
        try:
            return (await self.client.beta.threads.create()).id
        except openai.APIError as exc:
            raise translate(exc) from exc

    async def find_run(self, *, thread_id: str, message_id: str) -> RunRef | None:
        """The run an earlier attempt started for ``message_id`` on the thread, if there is one."""
        try:
            page = await self.client.beta.threads.runs.list(thread_id, order="desc", limit=_FIND_RUN_WINDOW)
        except openai.APIError as exc:
            raise translate(exc) from exc
        for run in page.data:
            if (run.metadata or {}).get(MESSAGE_TAG) == message_id:
                return RunRef(backend=self.name, thread_id=run.thread_id, run_id=run.id, assistant_id=run.assistant_id)
        return None

    async def resume(self, *, run: RunRef) -> AsyncIterator[RunEvent]:
        """Re-attach to a run another attempt started: wait while it works, then yield what it
        produced so far as one ``TextDelta`` and, like ``run``, end with ``ToolCallsRequired``
        (answer with ``submit_tool_outputs``) or ``RunCompleted``; other endings raise ``RunEnded``.
        """
        found = await self._settled(run)
        text = await self._run_text(run)
        if text:
            yield TextDelta(text=text)
        data: dict[str, Any] = found.to_dict()  # the stream's JSON shape (a rare path: no need to skip the model)
        if found.status == "requires_action":
            yield self._tool_calls(data, run.assistant_id)
        elif found.status == "completed":
            yield RunCompleted(run=self._ref(data, run.assistant_id), usage=data.get("usage"))
        else:
            raise ended(str(found.status), data, error_field="last_error")

    async def submit_tool_outputs(self, *, run: RunRef, outputs: list[ToolOutput]) -> AsyncIterator[RunEvent]:
        opener = self.client.beta.threads.runs.with_streaming_response.submit_tool_outputs(
            run.run_id, thread_id=run.thread_id, stream=True,
            tool_outputs=[{"tool_call_id": o.call_id, "output": o.output} for o in outputs],
        )
        async for event in self._stream(opener, run.assistant_id):
            yield event

    async def cancel(self, *, run: RunRef) -> None:
        """Cancel the run and wait (up to ``cancel_timeout_s``) until it has stopped, so the thread
        takes a new run at once. A run that already ended is left as it is."""
        try:
            await self.client.beta.threads.runs.cancel(run.run_id, thread_id=run.thread_id)
        except openai.APIError as exc:
            error = translate(exc)
            if not isinstance(error, BackendBadRequest):
                raise error from exc
            # Refused: the run is not active any more (it ended on its own meanwhile).
        await self._settled(run, timeout_s=self.cancel_timeout_s, wait_on=_WORKING | {"requires_action"})

    async def retrieve(self, *, run: RunRef) -> str:
        """The run's current status (``in_progress``, ``requires_action``, ``completed``, …)."""
        return str((await self._retrieve(run)).status)

    async def _retrieve(self, run: RunRef) -> Run:
        try:
            return await self.client.beta.threads.runs.retrieve(run.run_id, thread_id=run.thread_id)
        except openai.APIError as exc:
            raise translate(exc) from exc

    async def _settled(self, run: RunRef, *, timeout_s: float | None = None,
                       wait_on: frozenset[str] = _WORKING) -> Run:
        """The run once its status is not in ``wait_on``; ``BackendTimeout`` if that takes too long."""
        status = "unknown"
        try:
            async with asyncio.timeout(timeout_s if timeout_s is not None else self.settle_timeout_s):
                found = await self._retrieve(run)
                while (status := str(found.status)) in wait_on:
                    await asyncio.sleep(self.poll_interval_s)
                    found = await self._retrieve(run)
        except TimeoutError as exc:
            raise BackendTimeout(f"run {run.run_id} is still {status}") from exc
        return found

    async def _run_text(self, run: RunRef) -> str:
        """The text of the run's assistant messages so far, in order."""
        texts: list[str] = []
        try:
            async for message in self.client.beta.threads.messages.list(
                run.thread_id, run_id=run.run_id, order="asc", limit=100,
            ):
                if message.role == "assistant":
                    texts.append("".join(b.text.value for b in message.content if b.type == "text"))
        except openai.APIError as exc:
            raise translate(exc) from exc
        return "\n\n".join(t for t in texts if t)

    async def _stream(self, opener: _Opener, assistant_id: str | None) -> AsyncIterator[RunEvent]:
        """Open the SSE stream and translate its events until the run pauses or ends. The body is
        read to its end before the last event is handed on, so the connection goes back to the pool."""
        try:
            async with opener as response:
                stream = EventStream(response.iter_bytes(), _STREAM_EVENTS)
                async for event in stream:
                    mapped = self._map(event, assistant_id)
                    last = bool(mapped) and isinstance(mapped[-1], ToolCallsRequired | RunCompleted)
                    if last:
                        await stream.finish()
                    for item in mapped:
                        yield item
                    if last:
                        return
        except STREAM_ERRORS as exc:
            raise translate(exc) from exc
        raise BackendUnavailable("the backend's stream ended before the run finished")

    def _map(self, event: Event, assistant_id: str | None) -> list[RunEvent]:
        name, data = event.name, event.data
        if name == "thread.message.delta":
            return [TextDelta(text=text) for text in _delta_texts(data)]
        if name == "thread.run.created":
            return [RunStarted(run=self._ref(data, assistant_id))]
        if name == "thread.run.requires_action":
            return [self._tool_calls(data, assistant_id)]
        if name == "thread.run.completed":
            return [RunCompleted(run=self._ref(data, assistant_id), usage=data.get("usage"))]
        if name in _TERMINAL_FAILURES:
            raise ended(_TERMINAL_FAILURES[name], data, error_field="last_error")
        if name == "error":
            error = data["error"] if isinstance(data.get("error"), dict) else data
            raise BackendError(f"backend stream error: {error.get('message')}", code=error.get("code"))
        return []

    def _ref(self, run: Mapping[str, Any], assistant_id: str | None) -> RunRef:
        """The reference of a run object (the stream's JSON)."""
        return RunRef(backend=self.name, thread_id=run["thread_id"], run_id=run["id"],
                      assistant_id=run.get("assistant_id") or assistant_id)

    def _tool_calls(self, run: Mapping[str, Any], assistant_id: str | None) -> ToolCallsRequired:
        action = run.get("required_action") or {}
        calls = (action.get("submit_tool_outputs") or {}).get("tool_calls") or []
        return ToolCallsRequired(
            run=self._ref(run, assistant_id),
            calls=[ToolCall(call_id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
                   for c in calls],
        )


_Opener = AbstractAsyncContextManager[AsyncAPIResponse[Any]]
"""A streamed request not sent yet (``with_streaming_response``): entering it sends it."""


def _delta_texts(delta_event: Mapping[str, Any]) -> list[str]:
    """The non-empty text pieces of a ``thread.message.delta`` event's data."""
    blocks = (delta_event.get("delta") or {}).get("content") or []
    return [value for block in blocks if block.get("type") == "text"
            and (value := (block.get("text") or {}).get("value"))]
