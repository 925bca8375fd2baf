"""The emulator's in-memory state and the API's rules on it (one active run per thread, expiry,
tool-output validation). Everything here is synchronous: no await between a check and its write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from core.emulator import script, wire
from core.emulator.wire import ApiError, Obj


class RecordedRequest(NamedTuple):
    """One request the emulator answered: ``(method, path, status, json body)``."""

    method: str
    path: str
    status: int
    body: Any


@dataclass
class ThreadRec:
    """A thread and what lives on it, oldest first."""

    obj: Obj
    messages: dict[str, Obj] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)

    def user_messages(self) -> list[Obj]:
        return [m for m in self.messages.values() if m["role"] == "user"]


@dataclass
class RunRec:
    """A run: its wire object plus what the scripted model decided and what it waits for.

    ``obj["model"]`` and ``obj["instructions"]`` are what the emulator used (overrides applied).
    ``deadline`` (monotonic seconds) is set while the run waits for tool outputs.
    """

    obj: Obj
    prompt: str
    directives: script.Directives
    reply: script.Reply
    steps: list[Obj] = field(default_factory=list)
    messages: list[Obj] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    deadline: float | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    backend_s: float = 0.0

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def status(self) -> str:
        return str(self.obj["status"])

    @property
    def cancel_requested(self) -> bool:
        return self.cancel.is_set()

    @property
    def model(self) -> str:
        return str(self.obj["model"])

    @property
    def instructions(self) -> str:
        return str(self.obj["instructions"])

    def tool_step(self) -> Obj | None:
        return next((s for s in reversed(self.steps) if s["type"] == "tool_calls"), None)


class EmulatorState:
    """Assistants, threads and runs, plus what tests observe: ``requests`` (every answered request)
    and ``active_run_conflicts`` (how many requests got the "already has an active run" 400)."""

    def __init__(self, *, expiry_s: float) -> None:
        self.expiry_s = expiry_s
        self.assistants: dict[str, Obj] = {}
        self.threads: dict[str, ThreadRec] = {}
        self.runs: dict[str, RunRec] = {}
        self.awaiting: dict[str, RunRec] = {}
        """Runs waiting for tool outputs (a ``deadline`` set): ``expire_due`` looks at these only."""
        self.requests: list[RecordedRequest] = []
        self.active_run_conflicts = 0

    # -- assistants ---------------------------------------------------------------------------

    def assistant(self, assistant_id: str) -> Obj:
        if assistant_id not in self.assistants:
            raise wire.not_found("assistant", assistant_id)
        return self.assistants[assistant_id]

    def assistant_for(self, body: Mapping[str, Any]) -> Obj:
        """The assistant a run body names in ``assistant_id``."""
        assistant_id = body.get("assistant_id")
        if not isinstance(assistant_id, str):
            raise ApiError(400, "Missing required parameter: 'assistant_id'.", param="assistant_id")
        return self.assistant(assistant_id)

    def create_assistant(self, body: Mapping[str, Any]) -> Obj:
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        obj = wire.assistant(body)
        self.assistants[obj["id"]] = obj
        return obj

    # -- threads and messages -----------------------------------------------------------------

    def thread(self, thread_id: str) -> ThreadRec:
        if thread_id not in self.threads:
            raise wire.not_found("thread", thread_id)
        return self.threads[thread_id]

    def create_thread(self, body: Mapping[str, Any]) -> ThreadRec:
        rec = ThreadRec(wire.thread(body))
        for message in body.get("messages") or []:
            self._append_message(rec, message)
        self.threads[rec.obj["id"]] = rec
        return rec

    def add_message(self, thread_id: str, body: Mapping[str, Any]) -> Obj:
        rec = self.thread(thread_id)
        self.refuse_if_active(rec)
        return self._append_message(rec, body)

    def _append_message(self, rec: ThreadRec, body: Mapping[str, Any]) -> Obj:
        role = body.get("role")
        if role not in ("user", "assistant"):
            raise ApiError(400, "Invalid 'role': expected 'user' or 'assistant'.", param="role")
        obj = wire.message(rec.obj["id"], role=role, content=wire.message_content(body.get("content")),
                           body=body)
        rec.messages[obj["id"]] = obj
        return obj

    def message(self, thread_id: str, message_id: str) -> Obj:
        messages = self.thread(thread_id).messages
        if message_id not in messages:
            raise wire.not_found("message", message_id)
        return messages[message_id]

    # -- runs -----------------------------------------------------------------------------------

    def active_run(self, rec: ThreadRec) -> RunRec | None:
        return next((self.runs[r] for r in rec.run_ids if self.runs[r].status in wire.ACTIVE_STATUSES), None)

    def refuse_if_active(self, rec: ThreadRec) -> None:
        """OpenAI's rule: nothing new on a thread while one of its runs is active (counted)."""
        active = self.active_run(rec)
        if active is not None:
            self.active_run_conflicts += 1
            raise ApiError(400, f"Thread {rec.obj['id']} already has an active run {active.id}.")

    def create_run(self, thread_id: str, body: Mapping[str, Any]) -> RunRec:
        """A queued run on the thread, after its ``additional_messages``; the reply is decided now."""
        rec = self.thread(thread_id)
        assistant_obj = self.assistant_for(body)
        self.refuse_if_active(rec)
        for message in body.get("additional_messages") or []:
            self._append_message(rec, message)
        obj = wire.run(thread_id, assistant_obj, body)
        users = rec.user_messages()
        latest = wire.message_text(users[-1]) if users else ""
        functions = set() if obj["tool_choice"] == "none" else wire.function_names(obj["tools"])
        reply = script.reply_to(latest, user_messages=len(users), functions=functions)
        prompt = obj["instructions"] + "".join(wire.message_text(m) for m in rec.messages.values())
        run = RunRec(obj, prompt=prompt, directives=script.parse_directives(latest), reply=reply)
        self.runs[run.id] = run
        rec.run_ids.append(run.id)
        return run

    def request_cancel(self, run: RunRec) -> bool:
        """Mark an active run ``cancelling``; True if it waits for tool outputs (nothing is playing
        it, so the caller must settle it)."""
        if run.status not in wire.ACTIVE_STATUSES:
            raise ApiError(400, f"Cannot cancel run with status '{run.status}'.")
        waiting = run.status == "requires_action"
        if not run.cancel_requested:
            run.cancel.set()
            run.obj["status"] = "cancelling"
        return waiting

    def run(self, thread_id: str, run_id: str) -> RunRec:
        self.thread(thread_id)
        run = self.runs.get(run_id)
        if run is None or run.obj["thread_id"] != thread_id:
            raise wire.not_found("run", run_id)
        return run

    def accept_outputs(self, run: RunRec, outputs: Any) -> None:
        """Validate ``tool_outputs`` (every pending call answered exactly once), record them on the
        tool step and queue the run again."""
        if run.status != "requires_action":
            raise ApiError(400, f'Runs in status "{run.status}" do not accept tool outputs.')
        step = run.tool_step()
        assert step is not None, "a run in requires_action has a tool step"
        calls = {call["id"]: call for call in step["step_details"]["tool_calls"]}
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise ApiError(400, "Invalid 'tool_outputs': expected an array of objects.", param="tool_outputs")
        given = [o.get("tool_call_id") for o in outputs]
        if sorted(map(str, given)) != sorted(calls):
            raise ApiError(400, f"Expected tool outputs for call_ids {sorted(calls)}, got {given}.",
                           param="tool_outputs")
        for output in outputs:
            calls[output["tool_call_id"]]["function"]["output"] = str(output.get("output") or "")
        run.outputs = [str(o.get("output") or "") for o in outputs]
        self.stop_waiting(run)
        run.obj.update(status="queued", required_action=None)

    def wait_for_outputs(self, run: RunRec, deadline: float) -> None:
        run.deadline = deadline
        self.awaiting[run.id] = run

    def stop_waiting(self, run: RunRec) -> None:
        run.deadline = None
        self.awaiting.pop(run.id, None)

    def expire_due(self, now: float | None = None) -> list[RunRec]:
        """Mark runs whose tool outputs are overdue ``expired``; returns them."""
        moment = time.monotonic() if now is None else now
        due = [r for r in self.awaiting.values()
               if r.status == "requires_action" and r.deadline is not None and r.deadline <= moment]
        for run in due:
            self.stop_waiting(run)
            run.obj.update(status="expired", required_action=None)
            step = run.tool_step()
            if step is not None:
                step.update(status="expired", expired_at=wire.now())
        return due
