"""The Discord adapter: ``/ask``, @mentions, the bot's conversation threads, DMs and ``/assistant``.

It only translates: Discord events become ``core.models.InboundMessage`` (``conversations``,
``ask``), answers are written by a ``ReplySink`` (``sink``), ``/assistant`` is core's command.
"""

from bots.discord.adapter import DiscordAdapter
from bots.discord.setup import (
    INVITE_PERMISSIONS,
    INVITE_SCOPES,
    DiscordProbe,
    check,
    invite_url,
    probe,
    sync_commands,
)

__all__ = ["INVITE_PERMISSIONS", "INVITE_SCOPES", "DiscordAdapter", "DiscordProbe", "check", "invite_url", "probe",
           "sync_commands"]
