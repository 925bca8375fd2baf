"""Typed models that cross core's boundaries: what adapters hand in, what backends yield.

Raw platform payloads never get here: adapters translate them into these models first.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Platform = Literal["slack", "discord", "console"]


class Place(BaseModel):
    """Where a message was said. ``workspace`` is a Slack team or Discord guild ("" for DMs)."""

    model_config = ConfigDict(frozen=True)

    platform: Platform
    workspace: str = ""
    channel: str
    user: str
    is_dm: bool = False


class InboundMessage(BaseModel):
    """A person's message, accepted by an adapter and handed to core's intake.

    ``conversation`` is the adapter's key for the unit that owns one backend thread (a Slack
    thread, a Discord thread or channel, a DM). ``event_id`` is the platform's own ID of the
    delivery, used to recognise redeliveries. ``reply_to`` is opaque to core: the adapter's own
    description of where to answer, handed back to it when the answer is written (possibly by
    another process, so it must be plain data).
    """

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    event_id: str
    conversation: str
    place: Place
    text: str
    reply_to: dict[str, str] = Field(default_factory=dict)
    profile: str | None = None
    """An explicit profile (``switchboard console --profile``); None: the place's binding decides."""
    traceparent: str | None = None
    received_at: float = Field(default_factory=time.time)


class ToolCall(BaseModel):
    """A function call the assistant asked for. ``arguments`` is the raw JSON text."""

    call_id: str
    name: str
    arguments: str


class ToolOutput(BaseModel):
    call_id: str
    output: str
    ok: bool = True


class RunRef(BaseModel):
    """Identifies a run on a backend, enough to retrieve, cancel or resume it."""

    backend: str
    thread_id: str
    run_id: str
    assistant_id: str | None = None


# --- events a backend yields while a run streams ---------------------------------------------

class RunStarted(BaseModel):
    kind: Literal["started"] = "started"
    run: RunRef


class TextDelta(BaseModel):
    kind: Literal["text"] = "text"
    text: str


class ToolCallsRequired(BaseModel):
    """The run paused: these calls must be answered with ``submit_tool_outputs``."""

    kind: Literal["tools"] = "tools"
    run: RunRef
    calls: list[ToolCall]


class RunCompleted(BaseModel):
    kind: Literal["completed"] = "completed"
    run: RunRef
    usage: dict[str, Any] | None = None


RunEvent = RunStarted | TextDelta | ToolCallsRequired | RunCompleted
