"""Slack event payloads → core's ``InboundMessage``: which events are a person talking to us, and where.

Pure functions over the raw ``event_callback`` body; no I/O. The handler asks core whether a
thread is one of ours (``Candidate.needs_existing_conversation``) before accepting.

Conversation keys (SPEC §2):

- a channel thread: ``slack:<team>:<channel>:<thread_ts>``; an @mention at top level starts one
  keyed by the mention's own ``ts`` (the bot answers in that thread);
- a DM: ``slack:<team>:<dm channel>:<thread_ts>`` inside a DM thread, else ``slack:<team>:<dm channel>``.

The dedupe ID (``InboundMessage.event_id``) is the *user's message* (``<team>:<channel>:<ts>``),
not the delivery's ``event_id``: a retry carries the same message, and so do the ``app_mention``
and ``message.channels`` events Slack sends for one mention in a thread we follow. Either way one
message gets one answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.models import InboundMessage, Place
from core.tracing import new_traceparent

# Subtypes that are still a person speaking; every other subtype (edits, deletions, joins, …) is not.
PERSON_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})
_DM_TYPES = frozenset({"im"})


@dataclass(frozen=True)
class BotIdentity:
    """Who the bot is in its workspace (from ``auth.test``)."""

    team_id: str
    user_id: str
    bot_id: str | None = None


@dataclass(frozen=True)
class Candidate:
    """A message to accept; in a channel thread only if the conversation already exists."""

    message: InboundMessage
    needs_existing_conversation: bool


def conversation_key(team: str, channel: str, thread_ts: str | None) -> str:
    base = f"slack:{team}:{channel}"
    return f"{base}:{thread_ts}" if thread_ts else base


def strip_mention(text: str, bot_user_id: str) -> str:
    """Remove the bot's own mentions (``<@U123>`` / ``<@U123|name>``); other mentions stay."""
    return re.sub(rf"[ \t]*<@{re.escape(bot_user_id)}(?:\|[^>]*)?>[ \t]*", " ", text).strip()


def is_dm_channel(channel: str, channel_type: str | None = None) -> bool:
    return channel_type in _DM_TYPES if channel_type else channel.startswith("D")


def _from_bot(event: Mapping[str, Any]) -> bool:
    return bool(event.get("bot_id")) or event.get("subtype") == "bot_message" or bool(event.get("bot_profile"))


def _is_self(event: Mapping[str, Any], me: BotIdentity) -> bool:
    return event.get("user") == me.user_id or (me.bot_id is not None and event.get("bot_id") == me.bot_id)


def is_person_speaking(event: Mapping[str, Any], *, me: BotIdentity, answer_bots: bool) -> bool:
    """True for a new message someone wrote: not ours, not an edit/deletion/join, a bot only if allowed."""
    if _is_self(event, me):
        return False
    subtype = event.get("subtype")
    if subtype == "bot_message":
        return answer_bots
    if subtype not in PERSON_SUBTYPES:
        return False
    if _from_bot(event) and not answer_bots:
        return False
    return bool(event.get("user") or event.get("bot_id"))


def translate(body: Mapping[str, Any], *, me: BotIdentity, answer_bots: bool) -> Candidate | None:
    """The message to accept for an ``app_mention`` or ``message`` event, or None to ignore it."""
    event = body.get("event") or {}
    kind = event.get("type")
    if kind not in ("app_mention", "message") or not is_person_speaking(event, me=me, answer_bots=answer_bots):
        return None
    channel = str(event.get("channel") or "")
    ts = str(event.get("ts") or "")
    if not channel or not ts:
        return None
    team = str(body.get("team_id") or event.get("team") or me.team_id)
    is_dm = is_dm_channel(channel, event.get("channel_type"))
    thread_ts = event.get("thread_ts") or None
    if kind == "message" and not is_dm and thread_ts is None:
        return None  # a channel message outside a thread: only @mentions start conversations
    if kind == "app_mention" and thread_ts is None:
        thread_ts = ts
    message = InboundMessage(
        event_id=f"{team}:{channel}:{ts}",
        conversation=conversation_key(team, channel, thread_ts),
        place=Place(platform="slack", workspace=team, channel=channel,
                    user=str(event.get("user") or event.get("bot_id")), is_dm=is_dm),
        text=strip_mention(str(event.get("text") or ""), me.user_id),
        reply_to=reply_to(team=team, channel=channel, thread_ts=thread_ts, message_ts=ts,
                          user=str(event.get("user") or ""), is_dm=is_dm),
        traceparent=new_traceparent().header(),
    )
    return Candidate(message=message, needs_existing_conversation=kind == "message" and not is_dm)


def reply_to(*, team: str, channel: str, thread_ts: str | None, message_ts: str, user: str,
             is_dm: bool) -> dict[str, str]:
    """Where to answer, as plain strings (another process may write the answer).

    ``thread_ts`` is "" for a top-level DM message: the answer goes to the DM itself.
    """
    return {"team": team, "channel": channel, "thread_ts": thread_ts or "", "message_ts": message_ts,
            "user": user, "dm": "1" if is_dm else ""}


def command_place(body: Mapping[str, Any]) -> tuple[Place, str | None]:
    """The place of a slash command and the conversation ``reset`` acts on: the DM's top-level
    conversation; None in channels, where every top-level @mention starts a new conversation anyway."""
    channel = str(body.get("channel_id") or "")
    team = str(body.get("team_id") or "")
    is_dm = channel.startswith("D") or body.get("channel_name") == "directmessage"
    place = Place(platform="slack", workspace=team, channel=channel, user=str(body.get("user_id") or ""),
                  is_dm=is_dm)
    return place, conversation_key(team, channel, None) if is_dm else None
