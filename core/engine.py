"""Answering one message: binding → backend run → tool rounds → streamed reply.

The engine is the dispatch point of a message: it is the one place that turns any failure
into a clear answer with a reference ID (and a log line with the same ID). Everything it
learns that recovery needs — which run answers the message, which chat messages it is
writing — is recorded (fenced by the lease) as soon as it is known.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.errors import BackendError, BackendNotFound, BackendTimeout, LeaseLost, RunEnded, SwitchboardError
from core.gateway import Gateway
from core.logs import new_reference
from core.metrics import FIRST_TEXT_SECONDS, REPLIES_POSTED, RUN_SECONDS, RUNS
from core.models import (
    InboundMessage,
    RunCompleted,
    RunEvent,
    RunRef,
    RunStarted,
    TextDelta,
    ToolCall,
    ToolCallsRequired,
    ToolOutput,
)
from core.ports import Backend, ReplySink, ToolContext, ToolRunner, Turn
from core.reply import ReplyWriter
from core.store import Pending, Store

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@runtime_checkable
class ShowsToolActivity(Protocol):
    """Optional sink capability: show tool calls as they happen (the console does)."""

    async def tool_activity(self, calls: list[ToolCall], outputs: list[ToolOutput]) -> None: ...


class ToolRoundsExceeded(SwitchboardError):
    user_message = "The assistant called tools too many times in a row; the answer was stopped."


class NoSinkForPlatform(SwitchboardError):
    """This process has no adapter for the message's platform: leave the message for one that has."""


@dataclass
class _RunState:
    message: InboundMessage
    token: str
    writer: ReplyWriter
    sink: ReplySink
    run: RunRef | None = None
    first_text_at: float | None = None


class Engine:
    def __init__(self, *, gateway: Gateway, store: Store, backends: Mapping[str, Backend], tools: ToolRunner) -> None:
        self.gateway = gateway
        self.store = store
        self.backends = dict(backends)
        self.tools = tools

    async def answer(self, pending: Pending, token: str) -> str:
        """Answer the message once; returns the final status to record (``answered`` | ``failed``).

        Raises ``LeaseLost`` (stop: another process owns the conversation now) and
        ``NoSinkForPlatform``; every other failure becomes an error answer.
        """
        message = pending.message
        attempts = int(pending.record.get("attempts", "0")) + 1
        await self.store.record(message, token, attempts=str(attempts), status="answering")
        factory = self.gateway.sinks.get(message.place.platform)
        if factory is None:
            raise NoSinkForPlatform(f"no adapter for {message.place.platform} in this process")
        sink = await factory.open(message=message, existing_refs={str(k): v for k, v in pending.reply_refs.items()})
        refs = dict(pending.reply_refs)

        async def on_posted(index: int, ref: str) -> None:
            refs[index] = ref
            REPLIES_POSTED.labels(platform=message.place.platform).inc()
            await self.store.record(message, token, refs=json.dumps(refs))

        writer = ReplyWriter(sink, on_posted=on_posted, existing_refs=pending.reply_refs)
        state = _RunState(message=message, token=token, writer=writer, sink=sink)
        return await self._answer_with(state, pending, attempts)

    async def _answer_with(self, state: _RunState, pending: Pending, attempts: int) -> str:
        reference = new_reference()
        try:
            await state.writer.start()
            if attempts > MAX_ATTEMPTS:
                raise BackendError(f"gave up after {attempts - 1} attempts")
            await self._run(state, pending)
            await state.writer.finish()
            return "answered"
        except (LeaseLost, asyncio.CancelledError):
            raise
        except SwitchboardError as exc:
            self._log_failure(state, reference, exc, expected=True)
            await state.writer.fail(exc.user_message, reference)
            return "failed"
        except Exception as exc:  # the dispatch-level catch-all: every message gets an answer
            self._log_failure(state, reference, exc, expected=False)
            await state.writer.fail(SwitchboardError.user_message, reference)
            return "failed"

    def _log_failure(self, state: _RunState, reference: str, exc: BaseException, *, expected: bool) -> None:
        fields = {"event": "answer_failed", "reference": reference, "message_id": state.message.id,
                  "conversation": state.message.conversation, "error": type(exc).__name__,
                  "run_id": state.run.run_id if state.run else None}
        if expected:
            log.warning("answer failed: %s", exc, extra=fields)
        else:
            log.error("answer failed unexpectedly", exc_info=exc, extra=fields)

    async def _run(self, state: _RunState, pending: Pending) -> None:
        message = state.message
        profile_name = message.profile
        if profile_name is None or profile_name not in self.gateway.config.profiles:
            profile_name = (await self.gateway.binding(message.place)).profile
        profile = self.gateway.config.profiles[profile_name]
        backend = self.backends[profile.backend]
        turn = Turn(profile_name=profile_name, profile=profile, text=message.text, message_id=message.id,
                    thread_id=pending.threads.get(profile.backend))
        started = time.perf_counter()
        status = "failed"
        try:
            async with asyncio.timeout(self.gateway.config.gateway.run_timeout_s):
                await self._drive(state, backend, turn)
            status = "completed"
        except TimeoutError as exc:
            status = "timeout"
            await self._cancel_quietly(backend, state)
            raise BackendTimeout("the run did not finish in time") from exc
        except RunEnded as exc:
            status = exc.status
            raise
        finally:
            RUNS.labels(backend=backend.name, status=status).inc()
            RUN_SECONDS.labels(backend=backend.name).observe(time.perf_counter() - started)

    async def _drive(self, state: _RunState, backend: Backend, turn: Turn) -> None:
        try:
            events = backend.run(turn=turn)
            rounds = await self._consume(state, backend, turn, events)
        except BackendNotFound:
            if turn.thread_id is None or state.run is not None:
                raise
            # The thread is gone on the backend (deleted, or another server): start a fresh one.
            log.warning("thread not found; starting a new one", extra={
                "event": "thread_missing", "conversation": state.message.conversation, "thread_id": turn.thread_id})
            rounds = await self._consume(state, backend, turn, backend.run(turn=turn.model_copy(
                update={"thread_id": None})))
        log.debug("run finished", extra={"tool_rounds": rounds})

    async def _consume(self, state: _RunState, backend: Backend, turn: Turn, events: AsyncIterator[RunEvent]) -> int:
        """Stream events into the reply, answering tool calls, until the run completes."""
        rounds = 0
        limit = self.gateway.config.gateway.max_tool_rounds
        while True:
            paused = await self._stream_until_pause(state, events)
            if paused is None:
                return rounds
            rounds += 1
            if rounds > limit:
                await self._cancel_quietly(backend, state)
                raise ToolRoundsExceeded(f"more than {limit} tool rounds")
            outputs = await self._call_tools(state, turn, paused)
            events = backend.submit_tool_outputs(run=paused.run, outputs=outputs)

    async def _stream_until_pause(self, state: _RunState, events: AsyncIterator[RunEvent]) -> ToolCallsRequired | None:
        async for event in events:
            if isinstance(event, TextDelta):
                if state.first_text_at is None:
                    state.first_text_at = time.time()
                    FIRST_TEXT_SECONDS.observe(max(0.0, state.first_text_at - state.message.received_at))
                await state.writer.append(event.text)
            elif isinstance(event, RunStarted):
                state.run = event.run
                await self.store.record_run(state.message, state.token, event.run)
            elif isinstance(event, ToolCallsRequired):
                state.run = event.run
                return event
            elif isinstance(event, RunCompleted):
                return None
        return None

    async def _call_tools(self, state: _RunState, turn: Turn, paused: ToolCallsRequired) -> list[ToolOutput]:
        message, run = state.message, paused.run
        context = ToolContext(
            platform=message.place.platform, workspace=message.place.workspace, channel=message.place.channel,
            user=message.place.user, conversation=message.conversation, run_id=run.run_id,
            thread_id=run.thread_id, assistant_id=run.assistant_id, traceparent=message.traceparent,
        )
        outputs = await self.tools.run_calls(profile_tools=turn.profile.tools, calls=paused.calls, context=context)
        if isinstance(state.sink, ShowsToolActivity):
            await state.sink.tool_activity(paused.calls, outputs)
        return outputs

    async def _cancel_quietly(self, backend: Backend, state: _RunState) -> None:
        """Best effort: a run we stopped waiting for should not keep working (or block the thread)."""
        if state.run is None:
            return
        try:
            await asyncio.shield(backend.cancel(run=state.run))
        except BackendError as exc:
            log.warning("could not cancel run", extra={"event": "cancel_failed", "run_id": state.run.run_id,
                                                        "error": type(exc).__name__})
