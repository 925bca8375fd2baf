"""The Assistants API v2 backend, on the official SDK's ``AsyncOpenAI`` (streaming runs).

One backend request per message where the API allows: a new conversation is one
create-and-run; a follow-up is one run with the message as ``additional_messages``. The user
message carries ``metadata.switchboard_message`` so a recovering process can tell whether it
already reached the thread.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.beta import AssistantStreamEvent
from openai.types.beta import assistant_stream_event as ev
from openai.types.beta.threads import Run, TextDeltaBlock

from core.backends.catalog import AssistantCatalog
from core.backends.errors import STREAM_ERRORS, translate
from core.errors import BackendError, BackendUnavailable, RunEnded
from core.models import RunCompleted, RunEvent, RunRef, RunStarted, TextDelta, ToolCall, ToolCallsRequired, ToolOutput
from core.ports import Turn

log = logging.getLogger(__name__)

_TERMINAL_FAILURES = {
    "thread.run.failed": "failed",
    "thread.run.cancelled": "cancelled",
    "thread.run.expired": "expired",
    "thread.run.incomplete": "incomplete",
}


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

    def __init__(self, *, name: str, client: AsyncOpenAI, catalog: AssistantCatalog) -> None:
        self.name = name
        self.client = client
        self.catalog = catalog

    async def run(self, *, turn: Turn) -> AsyncIterator[RunEvent]:
        assistant_id = await self.catalog.assistant_id(turn.profile_name, turn.profile)
        # Plain dicts: the SDK's TypedDict params describe the same JSON.
        message: Any = {"role": "user", "content": turn.text, "metadata": {"switchboard_message": turn.message_id}}
        overrides = run_overrides(turn)
        threads = self.client.beta.threads
        opener: Awaitable[Any]
        if turn.thread_id is None and not turn.profile.additional_instructions:
            opener = threads.create_and_run(
                assistant_id=assistant_id, thread={"messages": [message]}, stream=True, **overrides,
            )
        else:
            thread_id = turn.thread_id or await self._new_thread()
            if turn.profile.additional_instructions:
                overrides["additional_instructions"] = turn.profile.additional_instructions
            opener = threads.runs.create(
                thread_id, assistant_id=assistant_id, additional_messages=[message], stream=True, **overrides,
            )
        async for event in self._stream(opener, assistant_id):
            yield event

    async def submit_tool_outputs(self, *, run: RunRef, outputs: list[ToolOutput]) -> AsyncIterator[RunEvent]:
        opener = self.client.beta.threads.runs.submit_tool_outputs(
            run.run_id, thread_id=run.thread_id, stream=True,
            tool_outputs=[{"tool_call_id": o.call_id, "output": o.output} for o in outputs],
        )
        async for event in self._stream(opener, run.assistant_id):
            yield event

    async def cancel(self, *, run: RunRef) -> None:
        try:
            await self.client.beta.threads.runs.cancel(run.run_id, thread_id=run.thread_id)
        except openai.APIError as exc:
            raise translate(exc) from exc

    async def retrieve(self, *, run: RunRef) -> str:
        """The run's current status (``in_progress``, ``requires_action``, ``completed``, …)."""
        try:
            found = await self.client.beta.threads.runs.retrieve(run.run_id, thread_id=run.thread_id)
        except openai.APIError as exc:
            raise translate(exc) from exc
        return str(found.status)

    async def _new_thread(self) -> str:
        try:
            return (await self.client.beta.threads.create()).id
        except openai.APIError as exc:
            raise translate(exc) from exc

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
