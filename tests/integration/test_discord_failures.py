"""The Discord adapter when Discord says no: late interactions, missing permissions, gone channels,
expired tokens, a refused privileged intent, dropped gateways — and sharding."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from core.errors import StoreUnavailable
from core.models import InboundMessage
from tests.emulators.discord import DiscordEmulator
from tests.integration import test_discord
from tests.integration.test_discord import Env, prompt, said

make_env = test_discord.make_env
env = test_discord.env

MESSAGE_CONTENT_INTENT = 1 << 15


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    """For what the emulator cannot signal (log records written after its answer was read)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (nothing to wait on)
            await asyncio.sleep(0.02)


async def test_ask_too_late_to_defer_is_still_answered_in_a_thread(env: Env) -> None:
    emu = env.emu
    emu.unknown_interaction()
    interaction = await emu.slash("ask", prompt("are you there?"))
    await emu.wait_until(lambda: len(emu.threads()) == 1)
    [thread] = emu.threads()
    await env.answer(thread["id"], said("are you there?"), after=1)
    assert interaction.acked_at is None
    assert emu.calls_to("POST", rf"^/channels/{emu.channel_id}/threads$")  # a thread without a starter message
    opener, answer = emu.bot_messages(thread["id"])
    assert "asked:" in opener.content and answer.kind == "channel"


async def test_ask_without_thread_permission_answers_in_place(env: Env) -> None:
    emu = env.emu
    emu.missing_permissions("POST", r"/threads$")
    interaction = await emu.slash("ask", prompt("no threads here"))
    answer = await env.answer(emu.channel_id, said("no threads here"))
    assert not emu.threads()
    assert answer.kind == "followup" and answer.interaction_id == interaction.id
    assert "asked:" in emu.messages[interaction.original_id or ""].content  # the opener stays


async def test_ask_in_a_thread_answers_in_place(env: Env) -> None:
    emu = env.emu
    thread = emu.add_thread(emu.channel_id, "people talking")
    await emu.slash("ask", prompt("inside a thread"), channel_id=thread)
    answer = await env.answer(thread, said("inside a thread"))
    assert answer.kind == "original"
    assert len(emu.threads()) == 1


async def test_gone_channel_is_logged_and_the_bot_keeps_answering(env: Env,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    emu = env.emu
    other = emu.add_text_channel(emu.guild_id, "other")
    emu.unknown_channel(emu.channel_id)
    with caplog.at_level(logging.ERROR, logger="bots.discord.sink"):
        await emu.user_message("into the void", mention_bot=True)
        await eventually(lambda: any(getattr(r, "event", "") == "discord_delivery_failed" for r in caplog.records))
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "discord_delivery_failed"]
    assert record.reference.startswith("SB-") and record.discord_code == 10003  # type: ignore[attr-defined]
    await emu.user_message("still there?", mention_bot=True, channel_id=other)
    await env.answer(other, said("still there?"))


async def test_expired_token_moves_the_answer_to_a_channel_message(make_env: Callable[..., Any]) -> None:
    emu = DiscordEmulator(token_ttl_s=0.8)
    env = await make_env(emulator=emu)
    dm = emu.dm_channel(emu.user_id)
    interaction = await emu.slash("ask", prompt("take your time !slow=2.4"), channel_id=dm)
    answer = await env.answer(dm, said("take your time"))
    assert answer.kind == "channel"
    original = emu.messages[interaction.original_id or ""]
    assert original.content and not said("take your time")(original.content)  # the part written in time
    assert [c.status for c in emu.calls if c.status == 401]


async def test_token_that_cannot_outlive_the_run_sends_the_answer_to_the_channel(
        make_env: Callable[..., Any]) -> None:
    env = await make_env(gateway={"run_timeout_s": 900})
    emu = env.emu
    dm = emu.dm_channel(emu.user_id)
    interaction = await emu.slash("ask", prompt("long run"), channel_id=dm)
    answer = await env.answer(dm, said("long run"))
    assert answer.kind == "channel"
    assert emu.messages[interaction.original_id or ""].content == "The answer follows below."


async def test_without_message_content_intent_threads_need_a_mention(make_env: Callable[..., Any],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    emu = DiscordEmulator(message_content_allowed=False)
    with caplog.at_level(logging.ERROR, logger="bots.discord.adapter"):
        env = await make_env(emulator=emu)
    assert [bool(i["intents"] & MESSAGE_CONTENT_INTENT) for i in emu.identifies] == [True, False]
    assert any(getattr(r, "event", "") == "discord_intent_refused" for r in caplog.records)
    interaction = await emu.slash("ask", prompt("first"))
    await emu.wait_until(lambda: len(emu.threads()) == 1)
    [thread] = emu.threads()
    await env.answer(thread["id"], said("first"))
    assert "Mention <@" in emu.messages[interaction.original_id or ""].content
    await emu.user_message("unheard", channel_id=thread["id"])
    await emu.user_message("heard", channel_id=thread["id"], mention_bot=True)
    await env.answer(thread["id"], said("heard", 2))
    assert len(emu.bot_messages(thread["id"])) == 2


async def test_gateway_drop_resumes_and_answers(env: Env) -> None:
    emu = env.emu
    await emu.drop_connections(code=4000)
    await emu.wait_until(lambda: bool(emu.resumes) and emu.connected_shards() == 1)
    await emu.user_message("after the drop", mention_bot=True)
    await env.answer(emu.channel_id, said("after the drop"))
    assert len(emu.identifies) == 1


async def test_shards_share_the_guilds(make_env: Callable[..., Any]) -> None:
    emu = DiscordEmulator(shard_count=2)
    second_guild = emu.add_guild("second", shard=1 - (int(emu.guild_id) >> 22) % 2)
    second_channel = emu.add_text_channel(second_guild, "elsewhere")
    env = await make_env(emulator=emu, discord_config={"shard_count": 2})
    assert sorted(tuple(i["shard"]) for i in emu.identifies) == [(0, 2), (1, 2)]
    await emu.user_message("first guild", mention_bot=True)
    await emu.user_message("second guild", mention_bot=True, channel_id=second_channel)
    await env.answer(emu.channel_id, said("first guild"))
    await env.answer(second_channel, said("second guild"))


async def test_a_process_runs_only_its_shard_ids(make_env: Callable[..., Any]) -> None:
    emu = DiscordEmulator(shard_count=2)
    await make_env(emulator=emu, discord_config={"shard_count": 2, "shard_ids": [1]}, wait_shards=1)
    assert [i["shard"] for i in emu.identifies] == [[1, 2]]


async def test_bad_input_is_refused_with_core_s_words(make_env: Callable[..., Any]) -> None:
    env = await make_env(gateway={"max_message_chars": 20})
    emu = env.emu
    asked = await emu.user_message("this message is longer than twenty characters", mention_bot=True)
    refusal = await env.answer(emu.channel_id, lambda c: c.startswith("That message is too long"))
    assert refusal.reference_id == asked
    await emu.slash("ask", prompt("and so is this prompt, by far"))
    await emu.wait_until(lambda: len(emu.threads()) == 1)
    [thread] = emu.threads()
    await env.answer(thread["id"], lambda c: c.startswith("That message is too long"))


async def test_store_down_tells_the_person_with_a_reference(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis itself going down is the recovery issue's; here core's intake raises what it raises then."""
    emu = env.emu

    async def store_down(message: InboundMessage) -> None:
        raise StoreUnavailable("Redis unreachable: ConnectionError")

    monkeypatch.setattr(env.stack.runtime.gateway, "accept", store_down)
    asked = await emu.user_message("anyone home?", mention_bot=True)
    refusal = await env.answer(emu.channel_id, lambda c: "storage is unavailable" in c)
    assert refusal.reference_id == asked
    assert re.search(r"\(ref SB-[A-Z0-9]{8}\)$", refusal.content)
    monkeypatch.undo()
    await emu.user_message("back again", mention_bot=True)
    await env.answer(emu.channel_id, said("back again"))
