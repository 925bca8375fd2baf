"""Messages that talk to the bot: DMs, @mentions, and anything said in the bot's conversation threads.

A mention in a channel is answered as a reply there (one conversation per channel, or per person
with ``scope: user``); a message in a thread the bot opened continues that thread's conversation
without a mention. Without the message content intent Discord withholds the text of guild messages
that do not mention the bot: those arrive empty and are left alone.
"""

from __future__ import annotations

import logging

import discord
from discord.ext import commands

from bots.discord.intake import channel_origin
from bots.discord.origin import Origin, ReplyTarget, conversation_key, place_of, strip_bot_mention
from bots.discord.rest import describe
from bots.discord.services import FAILURES, Services, bot_id, need
from core.models import InboundMessage
from core.tracing import new_traceparent

log = logging.getLogger(__name__)

_SPOKEN = (discord.MessageType.default, discord.MessageType.reply)


class ConversationsCog(commands.Cog):
    def __init__(self, bot: discord.Client, services: Services | None) -> None:
        self.bot = bot
        self._services = services

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.type not in _SPOKEN:
            return
        me = bot_id(self.bot)
        origin = channel_origin(message.channel, user_id=message.author.id,
                                guild_id=message.guild.id if message.guild else None, bot_id=me)
        mentioned = any(user.id == me for user in message.mentions)
        if not (origin.is_dm or origin.bot_thread or mentioned):
            return
        text = strip_bot_mention(message.content, me)
        if not text and not (mentioned or origin.is_dm):
            return  # nothing to read: an attachment, or text withheld without the message content intent
        services = need(self._services)
        inbound = InboundMessage(
            event_id=str(message.id), conversation=conversation_key(origin, scope=services.options.scope),
            place=place_of(origin), text=text, reply_to=_target(origin, message).to_reply_to(),
            traceparent=new_traceparent().header(),
        )
        problem = await services.intake.submit(inbound)
        if problem is not None:
            await _refuse(message, problem)


def _target(origin: Origin, message: discord.Message) -> ReplyTarget:
    """In DMs and the bot's threads the answer simply follows; elsewhere it replies to the message."""
    quiet = origin.is_dm or origin.bot_thread
    return ReplyTarget(channel_id=origin.channel_id, reference_id=None if quiet else message.id)


async def _refuse(message: discord.Message, text: str) -> None:
    try:
        await message.reply(text, mention_author=False)
    except FAILURES as exc:
        log.warning("refusal not shown", extra={"event": "discord_refusal_unshown", "event_id": str(message.id),
                                                **describe(exc)})
