"""The discord.py client: a sharded bot with the adapter's cogs, pointed at the configured endpoints.

``DISCORD_API_URL`` replaces discord.py's REST base (``Route.BASE``) and ``DISCORD_GATEWAY_URL`` its
gateway (``DiscordWebSocket.DEFAULT_GATEWAY``). Both are class attributes of discord.py: they apply
to every client in the process, which is what a process talking to one Discord wants.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bots.discord.ask import AskCog
from bots.discord.assistant import AssistantCog
from bots.discord.conversations import ConversationsCog
from bots.discord.rest import NETWORK_ERRORS, describe
from bots.discord.services import Services
from core.config import DiscordOptions
from core.errors import SwitchboardError
from core.logs import new_reference
from core.settings import Settings

log = logging.getLogger(__name__)


def point_at(settings: Settings) -> None:
    """Send discord.py's REST calls to ``DISCORD_API_URL`` and its gateway to ``DISCORD_GATEWAY_URL``."""
    discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def intents_for(*, message_content: bool) -> discord.Intents:
    """Guilds, guild messages, DMs, and the privileged message content when the admin enabled it."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = message_content
    return intents


@dataclass(frozen=True)
class BotOptions:
    message_content: bool
    shard_ids: list[int] | None = None
    shard_count: int | None = None
    gateway_override: bool = False
    guild_ready_timeout_s: float = 2.0

    @classmethod
    def of(cls, settings: Settings, options: DiscordOptions, **overrides: Any) -> BotOptions:
        values: dict[str, Any] = {"message_content": options.message_content, "shard_ids": options.shard_ids,
                                  "shard_count": options.shard_count,
                                  "gateway_override": bool(settings.discord_gateway_url)}
        return cls(**(values | overrides))


class SwitchboardTree(app_commands.CommandTree[Any]):
    """The one catch-all for slash commands: log with a reference, tell the person (ephemerally)."""

    async def on_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError, /) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        reference = new_reference()
        log.error("command failed", exc_info=cause, extra={
            "event": "discord_command_failed", "reference": reference, "error": type(cause).__name__,
            "command": interaction.command.qualified_name if interaction.command else None})
        user_message = cause.user_message if isinstance(cause, SwitchboardError) else SwitchboardError.user_message
        text = f"⚠️ {user_message} (ref {reference})"
        try:
            if interaction.response.is_done():
                await interaction.edit_original_response(content=text)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except (discord.HTTPException, *NETWORK_ERRORS) as exc:
            log.warning("error not shown", extra={"event": "discord_error_unshown", "reference": reference,
                                                  **describe(exc)})


class SwitchboardBot(commands.AutoShardedBot):
    """The bot. ``services`` is ``None`` for a client that only syncs commands (it answers nothing)."""

    def __init__(self, options: BotOptions, services: Services | None) -> None:
        sharding: dict[str, Any] = {"shard_count": options.shard_count}
        if options.shard_ids is not None:
            sharding["shard_ids"] = options.shard_ids
        super().__init__(
            command_prefix=commands.when_mentioned, help_command=None, tree_cls=SwitchboardTree,
            intents=intents_for(message_content=options.message_content), **sharding,
            allowed_mentions=discord.AllowedMentions.none(), max_messages=None,
            chunk_guilds_at_startup=False, guild_ready_timeout=options.guild_ready_timeout_s,
        )
        self.options = options
        self.services = services

    async def setup_hook(self) -> None:
        if self.options.gateway_override and self.shard_count is None:
            # Without a shard count discord.py connects to the URL /gateway/bot names, not DEFAULT_GATEWAY.
            self.shard_count, _, _ = await self.http.get_bot_gateway()
        await self.add_cog(AskCog(self, self.services))
        await self.add_cog(ConversationsCog(self, self.services))
        await self.add_cog(AssistantCog(self, self.services))

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: conversations are the ``ConversationsCog``'s."""

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        reference = new_reference()
        log.error("event handler failed", exc_info=sys.exc_info(),
                  extra={"event": "discord_event_failed", "reference": reference, "handler": event_method})
