"""Where a Discord event happened, which conversation it belongs to, and where to answer.

Pure translation, no discord.py: the cogs read these values off discord.py objects, everything
else is decided here (and unit-tested here).

Conversation keys:

- a DM: ``discord:dm:<channel>``;
- a thread the bot opened for ``/ask``: ``discord:<guild>:<thread>`` (the thread *is* the conversation);
- any other channel or thread: ``discord:<guild>:<channel>``, or ``discord:<guild>:<channel>:<user>``
  with ``scope: user`` (one conversation per person per channel).

A thread's ``Place.channel`` is its parent channel, so bindings made for a channel apply in its threads.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

from core.models import Place

THREAD_NAME_MAX = 100
TOKEN_LIFETIME_S = 15 * 60
_WHITESPACE = re.compile(r"\s+")
_MARKUP = re.compile(r"[*_`~|>#]+")
_MENTION = re.compile(r"<(?:@[!&]?|#)(\d+)>")

Scope = Literal["channel", "user"]


@dataclass(frozen=True)
class Origin:
    """Who said something, where. ``parent_id`` is set in threads; ``guild_id`` is None in DMs."""

    channel_id: int
    user_id: int
    guild_id: int | None = None
    parent_id: int | None = None
    bot_thread: bool = False

    @property
    def is_dm(self) -> bool:
        return self.guild_id is None


def conversation_key(origin: Origin, *, scope: Scope) -> str:
    """The conversation ``origin`` belongs to (see the module docstring)."""
    if origin.guild_id is None:
        return f"discord:dm:{origin.channel_id}"
    key = f"discord:{origin.guild_id}:{origin.channel_id}"
    if scope == "user" and not origin.bot_thread:
        key += f":{origin.user_id}"
    return key


def place_of(origin: Origin) -> Place:
    return Place(
        platform="discord",
        workspace="" if origin.guild_id is None else str(origin.guild_id),
        channel=str(origin.parent_id or origin.channel_id),
        user=str(origin.user_id),
        is_dm=origin.is_dm,
    )


def strip_bot_mention(text: str, bot_id: int) -> str:
    """``text`` without the bot's own mentions (``<@id>``, ``<@!id>``), trimmed."""
    return re.sub(rf"<@!?{bot_id}>", " ", text).strip()


def thread_name(prompt: str) -> str:
    """A thread title from a prompt: one line of plain words, at most 100 characters (Discord's limit)."""
    words = _WHITESPACE.sub(" ", _MARKUP.sub("", _MENTION.sub("", prompt))).strip()
    if not words:
        return "Conversation"
    if len(words) <= THREAD_NAME_MAX:
        return words
    cut = words[: THREAD_NAME_MAX - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > THREAD_NAME_MAX // 2 else cut).rstrip() + "…"


def opener_text(*, user_id: int, prompt: str, bot_id: int, mention_needed: bool, limit: int = 2000) -> str:
    """The message a conversation thread starts from: who asked what, and how to go on."""
    hint = (f"-# Mention <@{bot_id}> in this thread to continue the conversation."
            if mention_needed else "-# Write in this thread to continue the conversation.")
    head = f"<@{user_id}> asked:\n"
    room = limit - len(head) - len(hint) - 3
    quoted = "\n".join("> " + line for line in prompt.splitlines() or [""])
    if len(quoted) > room:
        quoted = quoted[: room - 1] + "…"
    return f"{head}{quoted}\n{hint}"


@dataclass(frozen=True)
class ReplyTarget:
    """Where an answer goes, as plain data (``InboundMessage.reply_to``), so any process can write it.

    ``channel_id`` takes channel messages (a thread, a DM, a text channel); ``reference_id`` is the
    person's message the first part replies to. With an interaction ``token`` (valid 15 minutes),
    the answer goes into the interaction's deferred response (``original_used`` once that holds
    something else) and its follow-ups.
    """

    channel_id: int
    reference_id: int | None = None
    application_id: int | None = None
    token: str | None = None
    token_expires_at: float = 0.0
    original_used: bool = False

    def token_left_s(self, now: float | None = None) -> float:
        if self.token is None:
            return 0.0
        return self.token_expires_at - (time.time() if now is None else now)

    def to_reply_to(self) -> dict[str, str]:
        data = {"channel": str(self.channel_id)}
        if self.reference_id is not None:
            data["reference"] = str(self.reference_id)
        if self.token is not None and self.application_id is not None:
            data.update(application=str(self.application_id), token=self.token,
                        expires=f"{self.token_expires_at:.3f}", original="used" if self.original_used else "free")
        return data

    @classmethod
    def from_reply_to(cls, data: dict[str, str]) -> ReplyTarget:
        """Raises ``KeyError``/``ValueError`` for data this adapter did not write."""
        token = data.get("token")
        return cls(
            channel_id=int(data["channel"]),
            reference_id=int(data["reference"]) if "reference" in data else None,
            application_id=int(data["application"]) if token else None,
            token=token,
            token_expires_at=float(data["expires"]) if token else 0.0,
            original_used=data.get("original") == "used",
        )
