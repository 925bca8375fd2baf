"""``switchboard discord sync`` and ``switchboard check`` for Discord, against the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bots.discord import check, invite_url, sync_commands
from core.config import Config, DiscordOptions
from core.settings import Settings
from tests.emulators.discord import DiscordEmulator


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    emulator = DiscordEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()


def settings_for(emu: DiscordEmulator, token: str | None = None) -> Settings:
    return Settings(DISCORD_BOT_TOKEN=SecretStr(token or emu.token), DISCORD_API_URL=emu.rest_base)


async def test_sync_registers_ask_and_assistant_globally(emu: DiscordEmulator) -> None:
    names = await sync_commands(settings_for(emu), Config(), None)
    assert sorted(names) == ["ask", "assistant"]
    assert emu.calls_to("PUT", rf"^/applications/{emu.app_id}/commands$")
    commands = {c["name"]: c for c in emu.commands[None]}
    [option] = commands["ask"]["options"]
    assert (option["name"], option["type"], option["required"], option["max_length"]) == ("prompt", 3, True, 6000)
    subcommands = {o["name"] for o in commands["assistant"]["options"]}
    assert subcommands == {"show", "list", "reset", "use", "help"}
    assert not emu.calls_to("GET", "/gateway/bot")  # REST only


async def test_sync_for_one_guild_during_development(emu: DiscordEmulator) -> None:
    names = await sync_commands(settings_for(emu), Config(), int(emu.guild_id))
    assert sorted(names) == ["ask", "assistant"]
    assert emu.calls_to("PUT", rf"^/applications/{emu.app_id}/guilds/{emu.guild_id}/commands$")
    assert None not in emu.commands


async def test_check_prints_the_bot_and_the_invite_url(emu: DiscordEmulator,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert await check(settings_for(emu), None) == []
    out = capsys.readouterr().out
    assert f"ok   discord bot switchboard (application {emu.app_id})" in out
    assert "Message Content intent enabled" in out
    assert invite_url(int(emu.app_id)) in out


async def test_check_reports_an_intent_the_portal_does_not_grant(capsys: pytest.CaptureFixture[str]) -> None:
    emu = DiscordEmulator(message_content_allowed=False)
    await emu.start()
    try:
        [problem] = await check(settings_for(emu), None)
        assert problem.startswith("discord.message_content: the Message Content intent is off")
        config = Config(discord=DiscordOptions(message_content=False))
        assert await check(settings_for(emu), config) == []
        assert "people mention the bot in its threads" in capsys.readouterr().out
    finally:
        await emu.stop()


async def test_check_reports_a_refused_token_without_showing_it(emu: DiscordEmulator,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    problems = await check(settings_for(emu, token="wrong-token-value"), None)
    assert problems == ["discord: DISCORD_BOT_TOKEN: Discord refused the token"]
    assert "wrong-token-value" not in capsys.readouterr().out


async def test_check_reports_an_unreachable_discord() -> None:
    settings = Settings(DISCORD_BOT_TOKEN=SecretStr("x"), DISCORD_API_URL="http://127.0.0.1:9/api/v10")
    [problem] = await check(settings, None)
    assert problem.startswith("discord: cannot log in at http://127.0.0.1:9/api/v10")
