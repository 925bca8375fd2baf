"""The small interfaces core talks through. Adapters, backends and tests implement them.

- ``Backend``: an assistant service (Assistants API v2, Responses API).
- ``ToolRunner``: resolves function calls (the HTTP tool client, or a fake in tests).
- ``ReplySink`` / ``ReplySinkFactory``: where an answer is written (a Slack thread, a Discord
  channel, the terminal). Core decides *what* to write and *when*; the sink only *how*.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol, runtime_checkable

from aiohttp import web
from pydantic import BaseModel

from core.config import ProfileConfig
from core.models import InboundMessage, RunEvent, RunRef, ToolCall, ToolOutput


class ToolContext(BaseModel):
    """Who and where a tool call comes from; sent to tool endpoints as ``context`` (SPEC §7)."""

    platform: str
    workspace: str
    channel: str
    user: str
    conversation: str
    run_id: str
    thread_id: str
    assistant_id: str | None = None
    traceparent: str | None = None


class Turn(BaseModel):
    """One user message to answer on one conversation, as a backend needs it."""

    profile_name: str
    profile: ProfileConfig
    thread_id: str | None
    text: str
    message_id: str
    conversation: str | None = None
    """The conversation's key, for state a backend keeps in Redis beside it (``state: replay``)."""
    lease_token: str | None = None
    """The engine's lease on the conversation: a backend's own Redis writes are fenced by it."""


class Backend(Protocol):
    """An assistant service. Methods raise ``core.errors.BackendError`` subclasses or ``RunEnded``.

    ``run`` yields ``RunStarted`` first (with the thread ID, new or given), then ``TextDelta``s,
    and ends with either ``ToolCallsRequired`` (answer with ``submit_tool_outputs``, which
    streams the continuation the same way) or ``RunCompleted``. ``resume`` re-attaches to a run
    an interrupted attempt started (see ``Resumable``); ``cancel`` returns once the run stopped.
    """

    name: str

    def run(self, *, turn: Turn) -> AsyncIterator[RunEvent]: ...

    def submit_tool_outputs(self, *, run: RunRef, outputs: list[ToolOutput]) -> AsyncIterator[RunEvent]: ...

    def resume(self, *, run: RunRef) -> AsyncIterator[RunEvent]: ...

    async def cancel(self, *, run: RunRef) -> None: ...


@runtime_checkable
class Resumable(Protocol):
    """A ``Backend`` that can re-attach to a run an interrupted attempt (or a dead process) started.

    ``resume`` waits while the run works, yields the text it produced so far as one
    ``TextDelta``, then ends like ``run``: ``ToolCallsRequired`` or ``RunCompleted``; other
    endings raise ``RunEnded``. Every ``Backend`` has it; the engine still checks, so a duck-typed
    backend without it stays safe: the interrupted run is cancelled and the answer is a clear
    error rather than a second run. A backend that cannot resume a particular run raises a
    ``BackendError`` (the same clear error).
    """

    def resume(self, *, run: RunRef) -> AsyncIterator[RunEvent]: ...


@runtime_checkable
class ServerThreads(Protocol):
    """A ``Backend`` whose threads live on the server: the engine creates a conversation's thread
    and records it before the first run (record before you start), and asks for the run of a
    message before it starts another after an interruption (check before you retry)."""

    async def new_thread(self) -> str: ...

    async def find_run(self, *, thread_id: str, message_id: str) -> RunRef | None: ...


class ToolRunner(Protocol):
    async def run_calls(
        self, *, profile_tools: list[str], calls: list[ToolCall], context: ToolContext
    ) -> list[ToolOutput]:
        """Answer every call (in parallel); never raises for a failing tool: errors become outputs."""
        ...


class ReplySink(Protocol):
    """One answer being written on a platform. ``post`` returns the platform's message ref."""

    limit_chars: int
    min_edit_interval_s: float

    async def working(self) -> None:
        """Show that the assistant is working (status, reaction, typing)."""

    async def post(self, text: str, *, part: int) -> str:
        """Start message ``part`` (0, 1, … in the answer; the same number on every attempt)."""
        ...

    async def edit(self, ref: str, text: str, *, final: bool) -> None: ...

    async def done(self) -> None:
        """Clear the working indicator; called once, whatever the outcome."""


@runtime_checkable
class FindsPostedParts(Protocol):
    """Optional ``ReplySink`` capability, for recovery. An attempt killed between the platform's
    answer to a post and the write that records it leaves a chat message nobody knows; without
    this capability the next attempt posts that part again (a stray partial message remains).

    ``posted_parts`` returns the parts of *this* answer found on the platform (part index ->
    message ref), e.g. by a marker the sink put on each message it posted. The engine asks only
    when an earlier attempt was interrupted; recorded refs win over found ones.
    """

    async def posted_parts(self) -> Mapping[int, str]: ...


class ReplySinkFactory(Protocol):
    async def open(self, *, message: InboundMessage, existing_refs: Mapping[str, str]) -> ReplySink:
        """A sink for answering ``message``; ``existing_refs`` are parts already posted (recovery)."""
        ...


class PlatformAdapter(Protocol):
    """A chat platform started by ``switchboard run`` (Slack, Discord)."""

    name: str

    async def start(self) -> None:
        """Connect (Socket Mode, gateway login) and register the reply sink factory with core."""

    async def stop(self) -> None: ...

    def ready(self) -> bool:
        """Connected and able to deliver answers (``/readyz``)."""
        ...

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes to mount on the gateway's aiohttp server (Slack's ``POST /slack/events``)."""
        ...
