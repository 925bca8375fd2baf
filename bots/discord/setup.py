"""Admin tasks for the CLI: register the slash commands, build the invite URL, check the login.

- ``sync_commands`` registers ``/ask`` and ``/assistant`` with Discord: globally (every server; may take
  a while to show up), or in one server for development (``--guild ID``: at once).
- ``invite_url`` is the link that adds the bot to a server with the scopes and permissions it needs.
- ``check`` (``switchboard check``) logs in over REST (no gateway), compares the application's
  settings with the config and prints the invite URL; ``probe`` is the same without printing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import discord

from bots.discord.client import BotOptions, SwitchboardBot, point_at
from bots.discord.rest import NETWORK_ERRORS
from core.config import Config, DiscordOptions
from core.errors import ConfigError
from core.settings import Settings

INVITE_SCOPES = ("bot", "applications.commands")
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
    add_reactions=True,
    embed_links=True,
    attach_files=True,
)


def invite_url(application_id: int) -> str:
    """The OAuth2 link that adds the bot to a server, with ``bot`` + ``applications.commands`` scopes."""
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)


def _token(settings: Settings) -> str:
    if settings.discord_bot_token is None:
        raise ConfigError("environment", ["DISCORD_BOT_TOKEN: not set"])
    return settings.discord_bot_token.get_secret_value()


async def _logged_in(settings: Settings, options: DiscordOptions) -> SwitchboardBot:
    """A REST-only client with the adapter's commands; refused token → ``ConfigError``."""
    point_at(settings)
    bot = SwitchboardBot(BotOptions.of(settings, options), services=None)
    try:
        await bot.login(_token(settings))
    except discord.LoginFailure as exc:
        await bot.close()
        raise ConfigError("environment", ["DISCORD_BOT_TOKEN: Discord refused the token"]) from exc
    except BaseException:
        await bot.close()
        raise
    return bot


async def sync_commands(settings: Settings, config: Config, guild_id: int | None) -> list[str]:
    """Register the slash commands (in ``guild_id`` only, when given); returns their names."""
    bot = await _logged_in(settings, config.discord)
    try:
        guild = discord.Object(id=guild_id) if guild_id is not None else None
        if guild is not None:
            bot.tree.copy_global_to(guild=guild)
        synced = await bot.tree.sync(guild=guild)
    finally:
        await bot.close()
    return [command.name for command in synced]


@dataclass(frozen=True)
class DiscordProbe:
    """What ``switchboard check`` reports for Discord: ``problems`` is empty when all is well."""

    problems: list[str] = field(default_factory=list)
    application_id: int | None = None
    bot_name: str | None = None
    message_content_enabled: bool | None = None

    @property
    def invite_url(self) -> str | None:
        return invite_url(self.application_id) if self.application_id is not None else None


async def probe(settings: Settings, options: DiscordOptions) -> DiscordProbe:
    """Log in over REST and compare the application's settings with ``options``."""
    try:
        bot = await _logged_in(settings, options)
    except ConfigError as exc:
        return DiscordProbe(problems=[f"discord: {problem}" for problem in exc.problems])
    except (discord.HTTPException, *NETWORK_ERRORS) as exc:
        return DiscordProbe(problems=[f"discord: cannot log in at {settings.discord_api_url} ({type(exc).__name__})"])
    try:
        flags = bot.application_flags
        enabled = flags.gateway_message_content or flags.gateway_message_content_limited
        problems = []
        if options.message_content and not enabled:
            problems.append("discord.message_content: the Message Content intent is off in the developer portal "
                            "(Bot → Privileged Gateway Intents): enable it, or set discord.message_content: false "
                            "(people then mention the bot in its threads)")
        name = str(bot.user) if bot.user else None
        return DiscordProbe(problems=problems, application_id=bot.application_id, bot_name=name,
                            message_content_enabled=enabled)
    finally:
        await bot.close()


async def check(settings: Settings, config: Config | None) -> list[str]:
    """``switchboard check`` for Discord: prints ``ok`` lines and the invite URL; returns one line per problem."""
    options = config.discord if config is not None else DiscordOptions()
    result = await probe(settings, options)
    if result.application_id is None:
        return result.problems
    print(f"ok   discord bot {result.bot_name} (application {result.application_id})")
    if result.message_content_enabled:
        print("ok   discord Message Content intent enabled: the bot reads its threads without a mention")
    elif not options.message_content:
        print("ok   discord without the Message Content intent: people mention the bot in its threads")
    print(f"     discord invite URL: {result.invite_url}")
    return result.problems
