"""``/ask prompt:`` — defer first, then open a conversation thread (text channels) or answer in place.

The defer is the first thing done, always: Discord drops an interaction not acknowledged within
3 seconds, and nothing else (Redis, thread creation) may stand in its way. If Discord refuses the
defer anyway (10062: too late), the question is still answered, through channel messages.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bots.discord.intake import channel_origin
from bots.discord.origin import (
    TOKEN_LIFETIME_S,
    Origin,
    ReplyTarget,
    conversation_key,
    opener_text,
    place_of,
    thread_name,
)
from bots.discord.rest import describe
from bots.discord.services import FAILURES, Services, bot_id, defer, need
from core.access import refusal
from core.models import InboundMessage
from core.tracing import new_traceparent

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 6000  # Discord's limit for a string option


class AskCog(commands.Cog):
    def __init__(self, bot: discord.Client, services: Services | None) -> None:
        self.bot = bot
        self._services = services

    @app_commands.command(name="ask", description="Ask the assistant (in a text channel, this opens a thread)")
    @app_commands.describe(prompt="What you want to ask")
    async def ask(self, interaction: discord.Interaction,
                  prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS]) -> None:
        deferred = await defer(interaction)
        services = need(self._services)
        origin = channel_origin(interaction.channel, user_id=interaction.user.id, guild_id=interaction.guild_id,
                                bot_id=bot_id(self.bot))
        if not services.gateway.allowed_here(place_of(origin)):
            # Asked in person, so always answered (mentions there are told once a day); no thread is opened.
            await self._tell(interaction, refusal(place_of(origin)), thread=None, deferred=deferred,
                             original_used=False)
            return
        thread, original_used = None, False
        if isinstance(interaction.channel, discord.TextChannel):  # text and announcement channels hold threads
            thread, original_used = await self._open_thread(interaction, interaction.channel, services, prompt,
                                                            deferred=deferred)
        if thread is not None:
            origin = Origin(channel_id=thread.id, user_id=origin.user_id, guild_id=origin.guild_id,
                            parent_id=origin.channel_id, bot_thread=True)
            target = ReplyTarget(channel_id=thread.id)
        else:
            target = self._in_place(interaction, deferred=deferred, original_used=original_used)
        message = InboundMessage(
            event_id=str(interaction.id), conversation=conversation_key(origin, scope=services.options.scope),
            place=place_of(origin), text=prompt, reply_to=target.to_reply_to(),
            traceparent=new_traceparent().header(),
        )
        problem = await services.intake.submit(message)
        if problem is not None:
            await self._tell(interaction, problem, thread=thread, deferred=deferred, original_used=original_used)

    @staticmethod
    def _in_place(interaction: discord.Interaction, *, deferred: bool, original_used: bool) -> ReplyTarget:
        if not deferred:
            return ReplyTarget(channel_id=interaction.channel_id or 0)
        return ReplyTarget(
            channel_id=interaction.channel_id or 0, application_id=interaction.application_id,
            token=interaction.token, token_expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME_S,
            original_used=original_used,
        )

    async def _open_thread(self, interaction: discord.Interaction, channel: discord.TextChannel,
                           services: Services, prompt: str, *,
                           deferred: bool) -> tuple[discord.Thread | None, bool]:
        """The conversation's thread, started from the (edited) deferred response; also whether that was edited."""
        opener = opener_text(user_id=interaction.user.id, prompt=prompt, bot_id=bot_id(self.bot),
                             mention_needed=services.mention_needed)
        name, archive = thread_name(prompt), services.options.thread_archive_minutes
        original_used = False
        try:
            if deferred:
                start = await interaction.edit_original_response(content=opener)
                original_used = True
                return await start.create_thread(name=name, auto_archive_duration=archive), original_used
            thread = await channel.create_thread(name=name, type=discord.ChannelType.public_thread,
                                                 auto_archive_duration=archive)
            await thread.send(opener)
            return thread, original_used
        except FAILURES as exc:
            log.warning("no thread for /ask; answering in place", extra={
                "event": "discord_thread_failed", "interaction": str(interaction.id), **describe(exc)})
            return None, original_used

    @staticmethod
    async def _tell(interaction: discord.Interaction, text: str, *, thread: discord.Thread | None,
                    deferred: bool, original_used: bool) -> None:
        """Show why the question was not taken, where the answer would have gone."""
        try:
            if thread is not None:
                await thread.send(text)
            elif deferred and not original_used:
                await interaction.edit_original_response(content=text)
            elif deferred:
                await interaction.followup.send(text)
            elif isinstance(interaction.channel, discord.abc.Messageable):
                await interaction.channel.send(text)
        except FAILURES as exc:
            log.warning("refusal not shown", extra={"event": "discord_refusal_unshown",
                                                    "interaction": str(interaction.id), **describe(exc)})
