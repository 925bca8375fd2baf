"""Runs a run forward in a background task, emitting Assistants stream events as it goes.

A run advances in *segments*: from creation to ``requires_action`` or a terminal status, and
from submitted tool outputs to the next one. Each segment is a task the engine tracks, so a run
goes on when its SSE client disconnects (as on OpenAI) and non-streamed runs can be polled.
Events go to an optional ``Emit`` callback as ``(event name, JSON text)``; the text is taken at
emit time, so it is a snapshot. ``DROP`` asks the SSE writer to cut the connection; ``None`` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from core.emulator import script, wire
from core.emulator.store import EmulatorState, RunRec
from core.emulator.wire import Obj

log = logging.getLogger(__name__)

Emit = Callable[[tuple[str, str] | None], None]
DROP = "__drop__"


def _discard(_: tuple[str, str] | None) -> None:
    """The emit of a run nobody streams."""


class RunEngine:
    """Plays run segments as tracked tasks. ``backend_seconds`` totals all scripted sleeping."""

    def __init__(self, state: EmulatorState, *, chunks: int, latency_s: float) -> None:
        self.state = state
        self.chunks = chunks
        self.latency_s = latency_s
        self.backend_seconds = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, run: RunRec, emit: Emit | None = None, *, resumed: bool = False) -> None:
        """Play the run's next segment in the background: from creation, or (``resumed``) from
        accepted tool outputs. ``emit`` receives every event, then ``None``."""
        task = asyncio.create_task(self._segment(run, emit or _discard, resumed), name=f"emulator {run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    def settle_cancel(self, run: RunRec) -> None:
        """A run with no segment playing (waiting for tool outputs) goes cancelling -> cancelled."""
        task = asyncio.create_task(self._cancel_later(run), name=f"emulator cancel {run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    async def close(self) -> None:
        """Cancel every segment still playing and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("emulator run task failed", exc_info=task.exception())

    async def _cancel_later(self, run: RunRec) -> None:
        await asyncio.sleep(0)
        self._end_cancelled(run, _discard, message=None)

    async def _segment(self, run: RunRec, emit: Emit, resumed: bool) -> None:
        try:
            if resumed:
                step = run.tool_step()
                assert step is not None
                step.update(status="completed", completed_at=wire.now())
                _send(emit, "thread.run.step.completed", step)
                await self._play(run, emit, script.Reply(text=script.reply_to_outputs(run.outputs)))
            else:
                await self._play(run, emit, run.reply)
        except BaseException:
            emit((DROP, ""))  # a segment that did not finish must not look finished to its client
            raise
        finally:
            emit(None)

    async def _play(self, run: RunRec, emit: Emit, reply: script.Reply) -> None:
        if not await self._begin(run, emit):
            return
        if run.directives.fail:
            error = {"code": "server_error", "message": "The emulator failed this run (!fail)."}
            self._finish(run, emit, "failed", failed_at=wire.now(), last_error=error)
        elif run.directives.expire:
            self._finish(run, emit, "expired")
        elif reply.calls:
            self._require_action(run, emit, reply.calls)
        else:
            await self._stream_text(run, emit, reply.text)

    async def _begin(self, run: RunRec, emit: Emit) -> bool:
        """queued -> in_progress, then the backend latency; False if the run was cancelled meanwhile."""
        _send(emit, "thread.run.queued", run.obj)
        if run.cancel_requested:
            self._end_cancelled(run, emit, message=None)
            return False
        run.obj.update(status="in_progress", started_at=run.obj["started_at"] or wire.now())
        _send(emit, "thread.run.in_progress", run.obj)
        await self._sleep(run, self.latency_s)
        if run.cancel_requested:
            self._end_cancelled(run, emit, message=None)
            return False
        return True

    def _require_action(self, run: RunRec, emit: Emit, calls: tuple[script.PlannedCall, ...]) -> None:
        step = wire.step(run.obj, {"type": "tool_calls", "tool_calls": []})
        run.steps.append(step)
        _send(emit, "thread.run.step.created", step)
        _send(emit, "thread.run.step.in_progress", step)
        tool_calls = []
        for index, call in enumerate(calls):
            function = {"name": call.name, "arguments": call.arguments, "output": None}
            tool_call: Obj = {"id": wire.new_id("call"), "type": "function", "function": function}
            tool_calls.append(tool_call)
            step["step_details"]["tool_calls"].append(tool_call)
            delta = {"step_details": {"type": "tool_calls", "tool_calls": [{"index": index, **tool_call}]}}
            _send(emit, "thread.run.step.delta", {"id": step["id"], "object": "thread.run.step.delta",
                                                  "delta": delta})
        required = [{"id": c["id"], "type": "function",
                     "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
                    for c in tool_calls]
        self.state.wait_for_outputs(run, time.monotonic() + self.state.expiry_s)
        run.obj.update(
            status="requires_action", expires_at=wire.now() + int(self.state.expiry_s),
            required_action={"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": required}},
        )
        _send(emit, "thread.run.requires_action", run.obj)

    async def _stream_text(self, run: RunRec, emit: Emit, text: str) -> None:
        message = wire.message(run.obj["thread_id"], role="assistant", content=[], run_id=run.id,
                               assistant_id=run.obj["assistant_id"], status="in_progress")
        run.messages.append(message)
        thread = self.state.threads.get(run.obj["thread_id"])
        if thread is not None:
            thread.messages[message["id"]] = message
        step = wire.step(run.obj, {"type": "message_creation", "message_creation": {"message_id": message["id"]}})
        run.steps.append(step)
        for event, data in (("thread.run.step.created", step), ("thread.run.step.in_progress", step),
                            ("thread.message.created", message), ("thread.message.in_progress", message)):
            _send(emit, event, data)
        chunks = script.split_chunks(text, self.chunks)
        stop_at = len(chunks) // 2 if run.directives.incomplete or run.directives.cancel else len(chunks)
        for index, piece in enumerate(chunks[:stop_at]):
            await self._sleep(run, run.directives.slow_s / len(chunks))
            if run.cancel_requested:
                break
            self._append_text(message, piece, emit)
            if run.directives.drop and index == len(chunks) // 2:
                emit((DROP, ""))
        self._end_text(run, emit, message, step)

    def _append_text(self, message: Obj, piece: str, emit: Emit) -> None:
        if not message["content"]:
            message["content"].append(wire.text_part(""))
        message["content"][0]["text"]["value"] += piece
        delta = {"content": [{"index": 0, "type": "text", "text": {"value": piece, "annotations": []}}]}
        _send(emit, "thread.message.delta", {"id": message["id"], "object": "thread.message.delta",
                                             "delta": delta})

    def _end_text(self, run: RunRec, emit: Emit, message: Obj, step: Obj) -> None:
        if run.cancel_requested or run.directives.cancel:
            self._end_cancelled(run, emit, message=message)
            return
        completion = script.count_tokens(wire.message_text(message))
        step.update(status="completed", completed_at=wire.now(),
                    usage=wire.usage(script.count_tokens(run.prompt), completion))
        if run.directives.incomplete:
            _mark_incomplete(message, "max_tokens", emit)
            _send(emit, "thread.run.step.completed", step)
            self._finish(run, emit, "incomplete", incomplete_details={"reason": "max_completion_tokens"})
            return
        message.update(status="completed", completed_at=wire.now())
        _send(emit, "thread.message.completed", message)
        _send(emit, "thread.run.step.completed", step)
        self._finish(run, emit, "completed", completed_at=wire.now())

    def _end_cancelled(self, run: RunRec, emit: Emit, *, message: Obj | None) -> None:
        if message is not None:
            _mark_incomplete(message, "run_cancelled", emit)
        for step in run.steps:
            if step["status"] == "in_progress":
                step.update(status="cancelled", cancelled_at=wire.now())
                _send(emit, "thread.run.step.cancelled", step)
        self._finish(run, emit, "cancelled", cancelled_at=wire.now(), required_action=None)

    def _finish(self, run: RunRec, emit: Emit, status: str, **fields: Any) -> None:
        completion = sum(script.count_tokens(wire.message_text(m)) for m in run.messages)
        self.state.stop_waiting(run)
        run.obj.update(status=status, usage=wire.usage(script.count_tokens(run.prompt), completion), **fields)
        _send(emit, f"thread.run.{status}", run.obj)

    async def _sleep(self, run: RunRec, seconds: float) -> None:
        if seconds <= 0:
            return
        started = time.monotonic()
        try:
            # A cancel request ends the wait early, as a real model stops generating.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.cancel.wait(), seconds)
        finally:
            spent = time.monotonic() - started
            run.backend_s += spent
            self.backend_seconds += spent


def _mark_incomplete(message: Obj, reason: str, emit: Emit) -> None:
    message.update(status="incomplete", incomplete_at=wire.now(), incomplete_details={"reason": reason})
    _send(emit, "thread.message.incomplete", message)


def _send(emit: Emit, event: str, data: Obj) -> None:
    emit((event, json.dumps(data)))
