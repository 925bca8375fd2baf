"""``/assistant show | list | reset | use | help`` — core's command, shown only to the person who ran it.

Each subcommand defers (ephemerally) before anything else, then hands its text to
``core.commands.assistant_command`` with the place and conversation it was run in. The caller's
rights for ``use`` are read from the interaction itself (Manage Server in that channel, as Discord
computed it for this member), or the config's ``discord.admins``, at the moment of the call.

Discord applies ``default_member_permissions`` to top-level commands only (a subcommand's is
ignored), and ``show``/``list``/``reset`` are for everyone: so ``use`` carries no permission
hint in Discord's UI, and the check above is what guards it.
"""

from __future__ import annotations

import logging
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bots.discord.intake import channel_origin
from bots.discord.markup import to_discord
from bots.discord.origin import conversation_key, place_of
from bots.discord.rest import describe
from bots.discord.services import FAILURES, Services, bot_id, defer, need
from core.commands import CommandContext, assistant_command

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices
CLEAR = "--clear"
CLEAR_CHOICE = app_commands.Choice(name="(clear: fall back to the default)", value=CLEAR)


class AssistantCog(commands.GroupCog, group_name="assistant",
                   group_description="Which assistant answers here; start the conversation over"):
    def __init__(self, bot: discord.Client, services: Services | None) -> None:
        self.bot = bot
        self._services = services
        super().__init__()

    @app_commands.command(name="show", description="The assistant profile answering here, and why")
    async def show(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "show")

    @app_commands.command(name="list", description="The assistant profiles there are")
    async def list_profiles(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "list")

    @app_commands.command(name="reset", description="Forget this conversation: the next message starts a new one")
    async def reset(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "reset")

    @app_commands.command(name="use", description="(Manage Server) Choose the profile answering in this channel")
    @app_commands.describe(profile="A profile name", scope="This channel (default), or the whole server's default")
    async def use(self, interaction: discord.Interaction, profile: str,
                  scope: Literal["channel", "server"] = "channel") -> None:
        await self._run(interaction, f"use {profile}" + (" --workspace" if scope == "server" else ""))

    @use.autocomplete("profile")
    async def _profile_choices(self, _interaction: discord.Interaction,
                               current: str) -> list[app_commands.Choice[str]]:
        names = need(self._services).gateway.profile_names()
        hits = [app_commands.Choice(name=name, value=name) for name in names if current.lower() in name.lower()]
        if current.lower() in CLEAR_CHOICE.name:
            hits.append(CLEAR_CHOICE)
        return hits[:MAX_CHOICES]

    @app_commands.command(name="help", description="What /assistant can do")
    async def help(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "help")

    async def _run(self, interaction: discord.Interaction, text: str) -> None:
        deferred = await defer(interaction, ephemeral=True)
        services = need(self._services)
        origin = channel_origin(interaction.channel, user_id=interaction.user.id, guild_id=interaction.guild_id,
                                bot_id=bot_id(self.bot))

        async def is_admin() -> bool:
            if str(interaction.user.id) in services.options.admins:
                return True
            return interaction.guild_id is not None and interaction.permissions.manage_guild

        context = CommandContext(place=place_of(origin), is_admin=is_admin,
                                 conversation=conversation_key(origin, scope=services.options.scope))
        answer = await assistant_command(services.gateway, text, context)
        if not deferred:
            return  # Discord no longer takes an answer to this interaction (logged by ``defer``)
        try:
            await interaction.edit_original_response(content=to_discord(answer))
        except FAILURES as exc:
            log.warning("command answer not shown", extra={"event": "discord_command_unshown",
                                                           "interaction": str(interaction.id), **describe(exc)})
