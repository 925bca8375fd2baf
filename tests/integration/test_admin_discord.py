"""Admin features on Discord, end to end: the unmodified discord.py client against the Discord emulator,
core on a real Redis, the Assistants emulator. Rights come from the interaction itself (the member's
permissions as Discord computed them) or ``discord.admins``, at the moment of the call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from bots.discord import DiscordAdapter
from tests.conftest import RedisServer
from tests.emulators.discord import EPHEMERAL, DiscordEmulator, EmuInteraction
from tests.integration.admin_support import OPS, instructions_used, redis_state
from tests.integration.harness import Stack, open_stack

MANAGE_GUILD = 1 << 5
BOSS_NAME = "boss"


@contextlib.asynccontextmanager
async def discord_world(redis_url: str, extra: dict[str, Any] | None = None
                        ) -> AsyncIterator[tuple[Stack, DiscordEmulator]]:
    emu = DiscordEmulator()
    boss = emu.add_user(BOSS_NAME)
    config = {"profiles": OPS, "discord": {"admins": [boss]}, **(extra or {})}
    async with open_stack(redis_url, extra_config=config) as stack:
        await emu.start()
        settings = stack.settings.model_copy(update={
            "discord_bot_token": SecretStr(emu.token), "discord_api_url": emu.rest_base,
            "discord_gateway_url": emu.gateway_url})
        adapter = DiscordAdapter(gateway=stack.runtime.gateway, settings=settings, config=stack.runtime.config,
                                 guild_ready_timeout_s=0.05)
        await adapter.start()
        try:
            await emu.wait_ready()
            yield stack, emu
            await _quiet(stack)
        finally:
            await adapter.stop()
            await emu.stop()


async def _quiet(stack: Stack, timeout_s: float = 10) -> None:
    """Wait until no conversation is being answered, so teardown cuts no answer short."""
    redis = stack.runtime.store.redis
    async with asyncio.timeout(timeout_s):
        while await redis.keys("*:lease:*"):  # noqa: ASYNC110 (state in Redis: nothing to wait on)
            await asyncio.sleep(0.02)


@pytest.fixture
async def world(redis_server: RedisServer, redis_client: Redis) -> AsyncIterator[tuple[Stack, DiscordEmulator]]:
    async with discord_world(redis_server.url) as opened:
        yield opened


def boss_of(emu: DiscordEmulator) -> str:
    return next(uid for uid, user in emu.users.items() if user["username"] == BOSS_NAME)


async def assistant(emu: DiscordEmulator, sub: str, options: list[dict[str, Any]] | None = None,
                    **kwargs: Any) -> str:
    interaction = await emu.slash("assistant", options, subcommand=sub, **kwargs)
    await emu.wait_until(lambda: bool(interaction.original_id and emu.messages[interaction.original_id].content))
    message = emu.messages[interaction.original_id or ""]
    assert message.flags & EPHEMERAL
    return message.content


def use(profile: str, scope: str | None = None) -> list[dict[str, Any]]:
    options = [{"name": "profile", "type": 3, "value": profile}]
    return options + ([{"name": "scope", "type": 3, "value": scope}] if scope else [])


async def mention(stack: Stack, emu: DiscordEmulator, text: str, channel_id: str | None = None) -> None:
    channel_id = channel_id or emu.channel_id
    before = len(emu.bot_messages(channel_id))
    await emu.user_message(text, mention_bot=True, channel_id=channel_id)
    await emu.wait_until(lambda: any(m.content.startswith("[emulator]")
                                     for m in emu.bot_messages(channel_id)[before:]), 15)


async def test_manage_server_member_binds_and_the_next_message_uses_it(
        world: tuple[Stack, DiscordEmulator]) -> None:
    stack, emu = world
    await mention(stack, emu, "before")
    answer = await assistant(emu, "use", use("ops"), permissions=MANAGE_GUILD)
    assert answer.startswith("Done: `ops` is now chosen for this channel.")
    assert "bound to this channel (set by an admin)" in await assistant(emu, "show")
    await mention(stack, emu, "after")
    assert instructions_used(stack.emulator) == ["Be helpful.", "You are ops."]
    [change] = await stack.runtime.gateway.binding_log.history()
    assert (change.where, change.old, change.new, change.actor, change.via) == (
        f"discord/{emu.guild_id}/{emu.channel_id}", None, "ops", emu.user_id, "chat")


async def test_member_without_manage_server_is_refused_and_redis_is_unchanged(
        world: tuple[Stack, DiscordEmulator], redis_client: Redis) -> None:
    _, emu = world
    before = await redis_state(redis_client)
    answer = await assistant(emu, "use", use("ops"), permissions=0)
    assert answer == ("Only people with the Manage Server permission, and the people named in the config "
                      "(`discord.admins`) can choose the assistant here. Nothing changed.")
    assert await redis_state(redis_client) == before


async def test_config_admin_binds_the_server_default(world: tuple[Stack, DiscordEmulator]) -> None:
    _, emu = world
    answer = await assistant(emu, "use", use("ops", "server"), user_id=boss_of(emu), permissions=0)
    assert answer.startswith("Done: `ops` is now chosen for this workspace/server.")
    other = emu.add_text_channel(emu.guild_id, "random")
    assert "the default for this workspace/server (set by an admin)" in await assistant(emu, "show", channel_id=other)
    answer = await assistant(emu, "use", use("--clear", "server"), user_id=boss_of(emu))
    assert answer.startswith("Done: the choice for this workspace/server (`ops`) is removed.")
    assert "*helper* answers here: the global default" in await assistant(emu, "show", channel_id=other)


async def test_profile_names_autocomplete(world: tuple[Stack, DiscordEmulator]) -> None:
    _, emu = world

    async def choices(typed: str) -> list[str]:
        options = [{"name": "profile", "type": 3, "value": typed, "focused": True}]
        interaction: EmuInteraction = await emu.slash("assistant", options, subcommand="use", kind=4)
        await emu.wait_until(lambda: interaction.choices is not None)
        return [choice["value"] for choice in interaction.choices or []]

    assert await choices("") == ["helper", "ops", "--clear"]
    assert await choices("OP") == ["ops"]


async def test_use_in_a_dm_is_refused(world: tuple[Stack, DiscordEmulator]) -> None:
    _, emu = world
    answer = await assistant(emu, "use", use("ops"), channel_id=emu.dm_channel(boss_of(emu)), user_id=boss_of(emu))
    assert answer == "Choices are made per channel or per workspace/server, not in a direct message."


async def test_guild_outside_the_allowlist_is_told_once(redis_server: RedisServer, redis_client: Redis) -> None:
    async with discord_world(redis_server.url, {"access": {"discord": {"guilds": ["1"]}}}) as (stack, emu):
        first = await emu.user_message("hello?", mention_bot=True)
        await emu.wait_until(lambda: bool(emu.bot_messages(emu.channel_id)))
        [refusal] = emu.bot_messages(emu.channel_id)
        assert refusal.reference_id == first and "not enabled in this channel" in refusal.content
        await emu.user_message("still there?", mention_bot=True)
        await asyncio.sleep(0.3)
        assert len(emu.bot_messages(emu.channel_id)) == 1
        ask = await emu.slash("ask", [{"name": "prompt", "type": 3, "value": "and /ask?"}])
        await emu.wait_until(lambda: bool(ask.original_id and emu.messages[ask.original_id].content))
        assert "not enabled in this channel" in emu.messages[ask.original_id or ""].content  # asked: always told
        assert not emu.threads() and stack.emulator.state.threads == {}
        dm = emu.dm_channel(emu.user_id)
        await mention(stack, emu, "DMs are allowed", channel_id=dm)
