"""Handing a Discord message to core, and reading an event's origin off discord.py objects."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import discord

from bots.discord.origin import Origin
from core.errors import StoreUnavailable
from core.gateway import Gateway, MessageRejected
from core.logs import new_reference
from core.models import InboundMessage

log = logging.getLogger(__name__)


class Intake:
    """Hands messages to core, in the order they arrived, per conversation.

    discord.py runs each event handler in its own task, so two messages sent back to back would
    otherwise race to Redis; a lock per conversation (FIFO, taken before the first ``await``) keeps
    the gateway's order, which is the order people see.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: Counter[str] = Counter()

    async def submit(self, message: InboundMessage) -> str | None:
        """Queue ``message`` for an answer. Returns ``None`` once accepted (or refused where the person
        was already told), else what to tell the person.

        Discord does not deliver an event twice, so a message the store could not take is lost: the
        person is told to try again, with a reference that is in the logs.
        """
        key = message.conversation
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] += 1
        try:
            async with lock:
                return await self._accept(message)
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key], self._locks[key]

    async def _accept(self, message: InboundMessage) -> str | None:
        try:
            await self._gateway.accept(message)
        except MessageRejected as exc:
            return None if exc.silent else exc.user_message
        except StoreUnavailable as exc:
            reference = new_reference()
            log.error("message not accepted: store unavailable", extra={
                "event": "discord_intake_failed", "reference": reference, "conversation": message.conversation,
                "event_id": message.event_id, "error": type(exc).__name__})
            return f"⚠️ {exc.user_message} (ref {reference})"
        return None


def channel_origin(channel: object, *, user_id: int, guild_id: int | None, bot_id: int) -> Origin:
    """The ``Origin`` of something said by ``user_id`` in ``channel`` (a discord.py channel object)."""
    channel_id = int(getattr(channel, "id", 0))
    if isinstance(channel, discord.Thread):
        return Origin(channel_id=channel_id, user_id=user_id, guild_id=guild_id, parent_id=channel.parent_id,
                      bot_thread=channel.owner_id == bot_id)
    return Origin(channel_id=channel_id, user_id=user_id, guild_id=guild_id)

