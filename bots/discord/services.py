"""What the cogs need from the rest of the process: core's gateway and the Discord options."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import discord

from bots.discord.intake import Intake
from bots.discord.rest import NETWORK_ERRORS, describe
from core.config import DiscordOptions
from core.gateway import Gateway
from core.logs import new_reference

log = logging.getLogger(__name__)

FAILURES = (discord.HTTPException, *NETWORK_ERRORS)


@dataclass(frozen=True)
class Services:
    gateway: Gateway
    intake: Intake
    message_content: bool

    @property
    def options(self) -> DiscordOptions:
        """The current config's Discord options, read at each event so a config reload applies."""
        return self.gateway.config.discord

    @property
    def mention_needed(self) -> bool:
        """Without the message content intent, people must mention the bot to be read in its threads."""
        return not self.message_content


def need(services: Services | None) -> Services:
    if services is None:
        raise RuntimeError("this Discord client only syncs commands; it answers nothing")
    return services


def bot_id(client: discord.Client) -> int:
    if client.user is None:
        raise RuntimeError("the Discord client is not logged in")
    return client.user.id


async def defer(interaction: discord.Interaction, *, ephemeral: bool = False) -> bool:
    """Acknowledge ``interaction`` with "thinking…"; False when Discord no longer takes it (logged)."""
    try:
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
    except FAILURES as exc:
        log.warning("interaction not deferred", extra={"event": "discord_defer_failed", "reference": new_reference(),
                                                        "interaction": str(interaction.id), **describe(exc)})
        return False
    return True
