"""Allowlists (config ``access:``): where the bot answers at all.

By default it answers everywhere it is installed. ``workspaces``/``guilds`` limit the Slack
workspaces and Discord servers, ``channels`` the channels in them (threads belong to their
channel), ``dms`` direct messages: a Slack DM is allowed when ``dms`` is on and its workspace
is allowed; a Discord DM (no server) when ``dms`` is on. The console is always allowed.

Elsewhere a message is refused at intake, nothing is queued, and the place is told once:
``first_notice`` remembers a notice per channel for ``NOTICE_TTL_S`` (one day), so a busy
channel where people keep mentioning the bot does not fill with the same refusal.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from core.config import AccessConfig
from core.keys import NOTICE_TTL_S, Keys
from core.models import Place
from core.store import translate_errors

NOT_ENABLED_CHANNEL = "Sorry, I'm not enabled in this channel. An admin can enable me here if you need me."
NOT_ENABLED_DMS = "Sorry, I'm not enabled for direct messages here. Ask me in a channel where I am enabled."


def is_allowed(access: AccessConfig, place: Place) -> bool:
    """True if the config lets the bot answer at ``place``."""
    if place.platform == "slack":
        spaces, channels, dms = access.slack.workspaces, access.slack.channels, access.slack.dms
    elif place.platform == "discord":
        spaces, channels, dms = access.discord.guilds, access.discord.channels, access.discord.dms
        if place.is_dm:
            return dms  # a Discord DM belongs to no server
    else:
        return True
    if spaces and place.workspace not in spaces:
        return False
    if place.is_dm:
        return dms
    return not channels or place.channel in channels


def refusal(place: Place) -> str:
    """What the person is told where the bot is not enabled."""
    return NOT_ENABLED_DMS if place.is_dm else NOT_ENABLED_CHANNEL


@translate_errors
async def first_notice(redis: aioredis.Redis, keys: Keys, place: Place) -> bool:
    """True the first time in ``NOTICE_TTL_S`` that ``place``'s channel is told the bot is not enabled."""
    key = keys.notice(place.platform, place.workspace, place.channel)
    return bool(await redis.set(key, "1", nx=True, ex=NOTICE_TTL_S))
