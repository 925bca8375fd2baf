"""Answering one message: binding → backend run → tool rounds → streamed reply.

The engine is the dispatch point of a message: it is the one place that turns any failure
into a clear answer with a reference ID (and a log line with the same ID). Everything it
learns that recovery needs — which run answers the message, which chat messages it is
writing — is recorded (fenced by the lease) as soon as it is known.

Recovery (an attempt that another attempt or process interrupted) goes on from the record:

- *Record before you start*: the record says ``starting`` before a run can exist, and a new
  conversation's thread is created and recorded before its first run (``ServerThreads``).
- *Check before you retry*: a ``starting`` record means a run may exist; the backend is asked
  for the run of this message (``find_run``) before another is started.
- *Resume instead of restart*: a known run is re-attached to (``Resumable.resume``): its text so
  far is rewritten into the chat messages already posted (``existing_refs``), tool calls it
  still waits for are run again (tool requests carry the call ID as ``webhook-id``) and submitted.
- Backend 429/5xx are tried again with backoff (``core.recovery``): before a run exists by
  checking and starting again, after by resuming. A run past its deadline is cancelled.
- Nothing is written to chat once the lease is no longer certainly ours (``FencedSink``);
  ``LeaseLost``, ``StoreUnavailable`` and cancellation end the attempt *without* an answer, so
  the message stays at its inbox head for the next holder of the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from core.errors import (
    BackendError,
    BackendNotFound,
    BackendTimeout,
    LeaseLost,
    RunEnded,
    StoreUnavailable,
    SwitchboardError,
)
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
from core.ports import (
    Backend,
    FindsPostedParts,
    ReplySink,
    Resumable,
    ServerThreads,
    ToolContext,
    ToolRunner,
    Turn,
)
from core.recovery import RETRYABLE, Backoff, FencedSink, LeaseClock, RetryPolicy, despite_cancel
from core.reply import OnPosted, ReplyWriter
from core.store import Pending, Store, retry_unavailable

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Interrupted attempts (kills, lost leases; not hand-backs) after which a message gets a clear error
instead: a message that keeps killing processes must not take the whole fleet down in turn."""
T = TypeVar("T")


@runtime_checkable
class ShowsToolActivity(Protocol):
    """Optional sink capability: show tool calls as they happen (the console does)."""

    async def tool_activity(self, calls: list[ToolCall], outputs: list[ToolOutput]) -> None: ...


class ToolRoundsExceeded(SwitchboardError):
    user_message = "The assistant called tools too many times in a row; the answer was stopped."


class NoSinkForPlatform(SwitchboardError):
    """This process has no adapter for the message's platform: leave the message for one that has."""


class TooManyInterruptions(SwitchboardError):
    user_message = "Answering this message was interrupted too many times; please ask again."


class NotResumable(BackendError):
    user_message = "The answer was interrupted and cannot be continued; please ask again."


@dataclass
class _RunState:
    message: InboundMessage
    token: str
    writer: ReplyWriter
    sink: ReplySink
    fenced: FencedSink
    on_posted: OnPosted
    deadline: float
    """Loop time by which the run must be over (from the record's ``deadline_at``)."""
    maybe_started: bool = False
    """An earlier attempt may have started a run this engine does not know yet."""
    run: RunRef | None = None
    first_text_at: float | None = None
    turn: Turn | None = None
    findable: bool = False
    """The backend can find this message's run again (``ServerThreads.find_run``)."""
    unrecorded_run: RunRef | None = None
    """A started run of a findable backend, recorded with the first chat message (one Redis round
    trip less per message) or before tools run. Until then the record says ``starting``, so an
    attempt that dies in between is followed by one that checks before it retries."""


class Engine:
    def __init__(
        self, *, gateway: Gateway, store: Store, backends: Mapping[str, Backend], tools: ToolRunner,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.backends = dict(backends)
        self.tools = tools
        self.retry = retry or RetryPolicy()

    async def answer(self, pending: Pending, token: str, *, held: LeaseClock | None = None) -> str:
        """Answer the message once; returns the final status to record (``answered`` | ``failed``).

        ``held`` is the worker's lease clock: while it says the lease is ours, Redis writes are
        tried again through a short outage, and once it says otherwise nothing more is written
        to chat. Raises ``LeaseLost`` (stop: another process owns the conversation now),
        ``StoreUnavailable`` (stop: the next holder of the lease goes on from the record) and
        ``NoSinkForPlatform``; every other failure becomes an error answer.
        """
        # ``pending`` was begun by the worker's claim/finish: this attempt is counted in its record,
        # its deadline set, and its status ``starting`` unless its run is known (record before you start).
        message = pending.message
        attempts = int(pending.record.get("attempts", "1"))
        interrupted = attempts - int(pending.record.get("handbacks", "0"))  # hand-backs are not failures
        deadline_at = float(pending.record.get("deadline_at") or self.deadline_at())
        log.info("answering", extra={"event": "answer_started", "message_id": message.id, "attempt": attempts,
                                     "conversation": message.conversation, "recorded_status": pending.status})
        factory = self.gateway.sinks.get(message.place.platform)
        if factory is None:
            raise NoSinkForPlatform(f"no adapter for {message.place.platform} in this process")
        sink = await factory.open(message=message, existing_refs={str(k): v for k, v in pending.reply_refs.items()})
        refs = await self._known_parts(sink, pending)

        async def on_posted(index: int, ref: str) -> None:
            refs[index] = ref
            REPLIES_POSTED.labels(platform=message.place.platform).inc()
            run, state.unrecorded_run = state.unrecorded_run, None
            if run is None:
                record = self._persist(held, lambda: self.store.record(message, token, refs=json.dumps(refs)))
            else:  # the run's record rides with the first part's (see _RunState.unrecorded_run)
                record = self._persist(held, lambda: self.store.record_run(message, token, run, refs=json.dumps(refs)))
            await despite_cancel(record)

        if refs != pending.reply_refs:  # adopted parts: recorded at once, should this attempt die too
            await self._persist(held, lambda: self.store.record(message, token, refs=json.dumps(refs)))
        fenced = FencedSink(sink, held=held, conversation=message.conversation, keep_interrupted=on_posted)
        writer = ReplyWriter(fenced, on_posted=on_posted, existing_refs=refs)
        loop_deadline = asyncio.get_running_loop().time() + (deadline_at - time.time())
        state = _RunState(message=message, token=token, writer=writer, sink=sink, fenced=fenced,
                          on_posted=on_posted, deadline=loop_deadline, run=pending.run,
                          maybe_started=pending.status == "starting")
        return await self._answer_with(state, pending, interrupted)

    def deadline_at(self) -> float:
        """When a run begun now must be over (wall clock): ``run_timeout_s`` from now."""
        return time.time() + self.gateway.config.gateway.run_timeout_s

    async def _known_parts(self, sink: ReplySink, pending: Pending) -> dict[int, str]:
        """The chat messages this answer already has: recorded ones, and after an interrupted
        attempt those the sink finds that were posted but never recorded."""
        refs = dict(pending.reply_refs)
        if pending.status == "queued" or not isinstance(sink, FindsPostedParts):
            return refs
        found = {index: ref for index, ref in (await sink.posted_parts()).items() if index not in refs}
        if found:
            log.info("adopting parts an interrupted attempt posted", extra={
                "event": "parts_adopted", "message_id": pending.message.id, "parts": sorted(found)})
        return refs | found

    async def _persist(self, held: LeaseClock | None, op: Callable[[], Awaitable[T]]) -> T:
        """A fenced write that rides out a short Redis outage while the lease is certainly ours."""
        if held is None:
            return await op()
        return await retry_unavailable(op, while_=held)

    async def _answer_with(self, state: _RunState, pending: Pending, attempts: int) -> str:
        reference = new_reference()
        try:
            await state.writer.start()
            if attempts > MAX_ATTEMPTS:
                await self._give_up(state)
                raise TooManyInterruptions(f"gave up after {attempts - 1} interrupted attempts")
            await self._run(state, pending)
            await state.writer.finish()
            return "answered"
        except (LeaseLost, StoreUnavailable, asyncio.CancelledError):
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
        state.findable = isinstance(backend, ServerThreads)
        turn = Turn(profile_name=profile_name, profile=profile, text=message.text, message_id=message.id,
                    thread_id=pending.threads.get(profile.backend), conversation=message.conversation,
                    lease_token=state.token)
        started = time.perf_counter()
        status = "failed"
        try:
            await self._drive(state, backend, turn)
            status = "completed"
        except TimeoutError as exc:
            status = "timeout"
            await self._cancel_quietly(backend, state, reason="timeout")
            raise BackendTimeout("the run did not finish in time") from exc
        except RunEnded as exc:
            status = exc.status
            raise
        except BackendError:
            # The run may still be active: stop it, or the conversation's next message could not start.
            await self._cancel_quietly(backend, state, reason="failed")
            raise
        finally:
            RUNS.labels(backend=backend.name, status=status).inc()
            RUN_SECONDS.labels(backend=backend.name).observe(time.perf_counter() - started)

    async def _drive(self, state: _RunState, backend: Backend, turn: Turn) -> None:
        """Start (or find, or resume) the run and stream it to the end, trying again through
        backend trouble. ``TimeoutError`` once the run's deadline has passed."""
        backoff = Backoff(self.retry, run_deadline=state.deadline)
        state.turn = turn
        replaced_thread = False
        while True:
            try:
                events = await self._within(state, self._open(state, backend))
                rounds = await self._consume(state, backend, state.turn, events)
                log.debug("run finished", extra={"tool_rounds": rounds})
                return
            except RETRYABLE as exc:
                await backoff.pause(exc)
                if state.run is not None:
                    self._restart_reply(state)
            except BackendNotFound:
                thread_id = state.turn.thread_id
                if thread_id is None or state.run is not None or replaced_thread:
                    raise
                # The thread is gone on the backend (deleted, or another server): start a fresh one.
                log.warning("thread not found; starting a new one", extra={
                    "event": "thread_missing", "conversation": state.message.conversation, "thread_id": thread_id})
                state.turn = state.turn.model_copy(update={"thread_id": None})
                state.maybe_started, replaced_thread = False, True

    async def _open(self, state: _RunState, backend: Backend) -> AsyncIterator[RunEvent]:
        """The run's events: resumed if it is known or found, else a new run on a recorded thread."""
        assert state.turn is not None
        if state.run is None and state.maybe_started:
            state.run = await self._find_started(state, backend, state.turn)
        if state.run is not None:
            if not isinstance(backend, Resumable):
                raise NotResumable(f"backend {backend.name} cannot resume run {state.run.run_id}")
            log.info("resuming run", extra={"event": "run_resumed", "run_id": state.run.run_id,
                                            "message_id": state.message.id})
            return backend.resume(run=state.run)
        state.turn = await self._with_thread(state, backend, state.turn)
        state.maybe_started = True
        return backend.run(turn=state.turn)

    async def _find_started(self, state: _RunState, backend: Backend, turn: Turn) -> RunRef | None:
        """The run an interrupted attempt started for this message, recorded now; None if none."""
        if not isinstance(backend, ServerThreads) or turn.thread_id is None:
            return None
        run = await backend.find_run(thread_id=turn.thread_id, message_id=state.message.id)
        if run is not None:
            log.info("found the run an interrupted attempt started", extra={
                "event": "run_found", "run_id": run.run_id, "message_id": state.message.id})
            await self.store.record_run(state.message, state.token, run)
        return run

    async def _with_thread(self, state: _RunState, backend: Backend, turn: Turn) -> Turn:
        """The turn on a thread that is recorded before anything runs on it (where the backend allows)."""
        if turn.thread_id is not None or not isinstance(backend, ServerThreads):
            return turn
        thread_id = await backend.new_thread()
        await self.store.record_thread(state.message, state.token, backend.name, thread_id)
        return turn.model_copy(update={"thread_id": thread_id})

    def _restart_reply(self, state: _RunState) -> None:
        """A resumed run repeats its whole text: write it afresh into the messages already posted."""
        state.writer = ReplyWriter(state.fenced, on_posted=state.on_posted, existing_refs=state.writer.refs)

    async def _within(self, state: _RunState, step: Awaitable[T]) -> T:
        """A backend or tool step, bounded by the run's deadline (chat writes are never cut short)."""
        async with asyncio.timeout_at(state.deadline):
            return await step

    async def _bounded(self, state: _RunState, events: AsyncIterator[RunEvent]) -> AsyncGenerator[RunEvent, None]:
        """``events``, each awaited within the run's deadline; the backend stream is closed on exit."""
        try:
            while True:
                try:
                    event = await self._within(state, anext(events))
                except StopAsyncIteration:
                    return
                yield event
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _consume(self, state: _RunState, backend: Backend, turn: Turn, events: AsyncIterator[RunEvent]) -> int:
        """Stream events into the reply, answering tool calls, until the run completes."""
        rounds = 0
        limit = self.gateway.config.gateway.max_tool_rounds
        while True:
            async with contextlib.aclosing(self._bounded(state, events)) as bounded:
                paused = await self._stream_until_pause(state, bounded)
            if paused is None:
                return rounds
            rounds += 1
            if rounds > limit:
                await self._cancel_quietly(backend, state, reason="too many tool rounds")
                raise ToolRoundsExceeded(f"more than {limit} tool rounds")
            outputs = await self._within(state, self._call_tools(state, turn, paused))
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
                if state.findable:
                    state.unrecorded_run = event.run
                else:
                    await self.store.record_run(state.message, state.token, event.run)
            elif isinstance(event, ToolCallsRequired):
                state.run = event.run
                await self._record_unrecorded_run(state)  # tools have side effects: the run is on record first
                return event
            elif isinstance(event, RunCompleted):
                if state.run is not None and event.run.thread_id != state.run.thread_id:
                    # The thread moved on during the run (a Responses chain ends at its last response).
                    await self.store.record_thread(state.message, state.token, event.run.backend,
                                                   event.run.thread_id)
                return None
        return None

    async def _record_unrecorded_run(self, state: _RunState) -> None:
        run, state.unrecorded_run = state.unrecorded_run, None
        if run is not None:
            await self.store.record_run(state.message, state.token, run)

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

    async def _give_up(self, state: _RunState) -> None:
        """Too many attempts: stop the run they left behind, so the conversation can go on."""
        if state.run is not None and state.run.backend in self.backends:
            await self._cancel_quietly(self.backends[state.run.backend], state, reason="gave up")

    async def _cancel_quietly(self, backend: Backend, state: _RunState, *, reason: str) -> None:
        """Best effort: a run we stopped waiting for should not keep working (or block the thread).
        The cancellation is logged and recorded on the message (``run_cancelled``)."""
        if state.run is None:
            return
        fields = {"run_id": state.run.run_id, "message_id": state.message.id, "reason": reason}
        try:
            await asyncio.shield(backend.cancel(run=state.run))
        except BackendError as exc:
            log.warning("could not cancel run", extra={"event": "cancel_failed", "error": type(exc).__name__,
                                                        **fields})
            return
        log.warning("run cancelled", extra={"event": "run_cancelled", **fields})
        await self.store.record(state.message, state.token, run_cancelled=reason)
