"""The Assistants API v2 backend, on the official SDK's ``AsyncOpenAI`` (streaming runs).

One backend request per message: a run with the message as ``additional_messages``. Both the
user message and the run carry ``metadata.switchboard_message`` (the gateway's message ID), so a
recovering process can find the run an interrupted attempt started (``find_run``) instead of
starting a second one, and re-attach to it (``resume``).

A conversation's thread is created on its own (``new_thread``) before its first run, so the
gateway can record it before anything is started on it: with create-and-run, a process that
died before the stream's first event would leave a run on a thread nobody knows, and the next
attempt could only start a second run. That costs one request per *conversation*, not per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.beta import AssistantStreamEvent
from openai.types.beta import assistant_stream_event as ev
from openai.types.beta.threads import Run, TextDeltaBlock
from redis.exceptions import RedisError

from core.backends.catalog import AssistantCatalog
from core.backends.errors import STREAM_ERRORS, translate
from core.errors import (
    BackendBadRequest,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    RunEnded,
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
        opener: Awaitable[Any]
        if turn.thread_id is None and not turn.profile.additional_instructions:
            opener = threads.create_and_run(
                assistant_id=assistant_id, thread={"messages": [message]}, stream=True, metadata=tag, **overrides,
            )
        else:
            thread_id = turn.thread_id or await self.new_thread()
            if turn.profile.additional_instructions:
                overrides["additional_instructions"] = turn.profile.additional_instructions
            opener = threads.runs.create(
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
                return self._ref(run, run.assistant_id)
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
        if found.status == "requires_action":
            yield self._tool_calls(found, run.assistant_id)
        elif found.status == "completed":
            usage = found.usage.model_dump() if found.usage else None
            yield RunCompleted(run=self._ref(found, run.assistant_id), usage=usage)
        else:
            raise _run_ended(str(found.status), found)

    async def submit_tool_outputs(self, *, run: RunRef, outputs: list[ToolOutput]) -> AsyncIterator[RunEvent]:
        opener = self.client.beta.threads.runs.submit_tool_outputs(
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

    async def _stream(self, opener: Awaitable[Any], assistant_id: str | None) -> AsyncIterator[RunEvent]:
        """Open the SSE stream and translate its events until the run pauses or ends."""
        try:
            stream = await opener
            async with stream:
                async for event in stream:
                    mapped = self._map(event, assistant_id)
                    for item in mapped:
                        yield item
                    if mapped and isinstance(mapped[-1], ToolCallsRequired | RunCompleted):
                        return
        except STREAM_ERRORS as exc:
            raise translate(exc) from exc
        raise BackendUnavailable("the backend's stream ended before the run finished")

    def _map(self, event: AssistantStreamEvent, assistant_id: str | None) -> list[RunEvent]:
        if isinstance(event, ev.ThreadMessageDelta):
            return [TextDelta(text=block.text.value) for block in event.data.delta.content or []
                    if isinstance(block, TextDeltaBlock) and block.text is not None and block.text.value]
        if isinstance(event, ev.ThreadRunCreated):
            return [RunStarted(run=self._ref(event.data, assistant_id))]
        if isinstance(event, ev.ThreadRunRequiresAction):
            return [self._tool_calls(event.data, assistant_id)]
        if isinstance(event, ev.ThreadRunCompleted):
            usage = event.data.usage.model_dump() if event.data.usage else None
            return [RunCompleted(run=self._ref(event.data, assistant_id), usage=usage)]
        if isinstance(event, ev.ThreadRunFailed | ev.ThreadRunCancelled | ev.ThreadRunExpired | ev.ThreadRunIncomplete):
            raise _run_ended(_TERMINAL_FAILURES[event.event], event.data)
        if isinstance(event, ev.ErrorEvent):
            raise BackendError(f"backend stream error: {event.data.message}", code=event.data.code)
        return []

    def _ref(self, run: Run, assistant_id: str | None) -> RunRef:
        return RunRef(backend=self.name, thread_id=run.thread_id, run_id=run.id,
                      assistant_id=run.assistant_id or assistant_id)

    def _tool_calls(self, run: Run, assistant_id: str | None) -> ToolCallsRequired:
        action = run.required_action
        calls = action.submit_tool_outputs.tool_calls if action is not None else []
        return ToolCallsRequired(
            run=self._ref(run, assistant_id),
            calls=[ToolCall(call_id=c.id, name=c.function.name, arguments=c.function.arguments) for c in calls],
        )


def _run_ended(status: str, run: Run) -> RunEnded:
    if run.last_error is not None:
        return RunEnded(status, code=run.last_error.code, detail=run.last_error.message)
    if run.incomplete_details is not None:
        return RunEnded(status, code=run.incomplete_details.reason)
    return RunEnded(status)
