"""The Discord platform for ``switchboard run``: logs in, keeps the gateway connected, writes answers.

``start`` logs in (a refused token is a ``ConfigError``), registers the reply sinks with core and
connects the gateway in a background task it owns. If Discord refuses the privileged message
content intent (not enabled in the developer portal: close code 4014), the bot reconnects without
it and says so in the log: it keeps working, but follow-ups in its threads then need a mention.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
from aiohttp import web

from bots.discord.client import BotOptions, SwitchboardBot, point_at
from bots.discord.intake import Intake
from bots.discord.services import Services
from bots.discord.sink import DiscordSinkFactory
from core.config import Config
from core.errors import ConfigError
from core.gateway import Gateway
from core.settings import Settings

log = logging.getLogger(__name__)

INTENT_HELP = ("the Message Content intent is not enabled for this bot in the Discord developer portal "
               "(Applications → Bot → Privileged Gateway Intents); running without it: in the bot's threads, "
               "people must mention the bot. Enable it, or set discord.message_content: false to silence this.")


class DiscordAdapter:
    """``core.ports.PlatformAdapter`` for Discord. ``bot_overrides`` tune ``BotOptions`` (tests)."""

    name = "discord"

    def __init__(self, *, gateway: Gateway, settings: Settings, config: Config, **bot_overrides: Any) -> None:
        if settings.discord_bot_token is None:
            raise ConfigError("environment", ["DISCORD_BOT_TOKEN: not set (it enables Discord)"])
        self._gateway = gateway
        self._settings = settings
        self._config = config
        self._token = settings.discord_bot_token.get_secret_value()
        self._overrides = bot_overrides
        self._intake = Intake(gateway)
        self._bot: SwitchboardBot | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def bot(self) -> SwitchboardBot:
        if self._bot is None:
            raise RuntimeError("the Discord adapter is not started")
        return self._bot

    def _new_bot(self, *, message_content: bool) -> SwitchboardBot:
        options = self._config.discord
        bot_options = BotOptions.of(self._settings, options, **{"message_content": message_content,
                                                                 **self._overrides})
        services = Services(gateway=self._gateway, intake=self._intake, message_content=bot_options.message_content)
        return SwitchboardBot(bot_options, services)

    async def start(self) -> None:
        point_at(self._settings)
        self._gateway.register_platform("discord", DiscordSinkFactory(
            lambda: self.bot, run_timeout_s=self._config.gateway.run_timeout_s))
        self._bot = await self._login(message_content=self._config.discord.message_content)
        self._task = asyncio.create_task(self._stay_connected(), name="discord-gateway")
        self._task.add_done_callback(_gateway_ended)

    async def _login(self, *, message_content: bool) -> SwitchboardBot:
        bot = self._new_bot(message_content=message_content)
        try:
            await bot.login(self._token)
        except discord.LoginFailure as exc:
            await bot.close()
            raise ConfigError("environment", ["DISCORD_BOT_TOKEN: Discord refused the token"]) from exc
        return bot

    async def _stay_connected(self) -> None:
        try:
            await self.bot.connect()
        except discord.PrivilegedIntentsRequired:
            if not self.bot.intents.message_content:
                raise
            log.error(INTENT_HELP, extra={"event": "discord_intent_refused"})
            await self.bot.close()
            self._bot = await self._login(message_content=False)
            await self.bot.connect()

    async def stop(self) -> None:
        bot, task = self._bot, self._task
        if bot is not None:
            await bot.close()
        if task is not None:
            await asyncio.wait([task])

    def ready(self) -> bool:
        """Logged in, every shard of this process connected, and the gateway task alive."""
        bot = self._bot
        if bot is None or self._task is None or self._task.done() or bot.is_closed() or not bot.is_ready():
            return False
        return all(not shard.is_closed() for shard in bot.shards.values())

    def routes(self) -> list[web.RouteDef]:
        return []


def _gateway_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Discord gateway stopped with an error; /readyz reports it", exc_info=task.exception(),
                  extra={"event": "discord_gateway_failed"})
