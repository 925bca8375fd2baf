"""The Discord reply sink against the emulator with a REST-only discord.py client: where each part goes,
typing while working, and what happens when Discord refuses a call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import discord
import pytest

from bots.discord import sink as sink_module
from bots.discord.client import intents_for
from bots.discord.origin import ReplyTarget
from bots.discord.rest import InteractionWebhook
from bots.discord.sink import DiscordSink, DiscordSinkFactory
from core.models import InboundMessage, Place
from tests.emulators.discord import DiscordEmulator, EmuInteraction


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    emulator = DiscordEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def client(emu: DiscordEmulator) -> AsyncIterator[discord.Client]:
    discord.http.Route.BASE = emu.rest_base
    bot = discord.Client(intents=intents_for(message_content=True))
    await bot.login(emu.token)
    yield bot
    await bot.close()


def channel_sink(client: discord.Client, channel: str, **target: int) -> DiscordSink:
    return DiscordSink(client, ReplyTarget(channel_id=int(channel), **target), hook=None, original_free=False,
                       message_id="m1", typing_interval_s=0.05)


async def test_first_part_replies_to_the_person_then_parts_follow(emu: DiscordEmulator,
                                                                  client: discord.Client) -> None:
    asked = await emu.user_message("question", mention_bot=True, deliver=False)
    sink = channel_sink(client, emu.channel_id, reference_id=int(asked))
    first, second = await sink.post("part one", part=0), await sink.post("part two @everyone", part=1)
    await sink.edit(first, "part one, final", final=True)
    one, two = emu.bot_messages(emu.channel_id)
    assert (first, second) == (f"message:{one.id}", f"message:{two.id}")
    assert one.reference_id == asked and two.reference_id is None
    assert one.history == ["part one", "part one, final"]
    posts = emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$")
    assert all(call.json["allowed_mentions"]["parse"] == [] for call in posts)


async def test_typing_repeats_while_working_and_stops_at_done(emu: DiscordEmulator, client: discord.Client) -> None:
    sink = channel_sink(client, emu.channel_id)
    await sink.working()
    await sink.working()  # once is enough
    await emu.wait_until(lambda: len(emu.calls_to("POST", "/typing$")) >= 3)
    await sink.done()
    count = len(emu.calls_to("POST", "/typing$"))
    await asyncio.sleep(0.2)
    assert len(emu.calls_to("POST", "/typing$")) == count


async def test_a_deleted_message_is_replaced_and_later_edits_follow_it(emu: DiscordEmulator,
                                                                       client: discord.Client) -> None:
    sink = channel_sink(client, emu.channel_id)
    ref = await sink.post("growing", part=0)
    del emu.messages[ref.split(":")[1]]
    await sink.edit(ref, "growing more", final=False)
    await sink.edit(ref, "grown", final=True)
    [replacement] = emu.bot_messages(emu.channel_id)
    assert replacement.history == ["growing more", "grown"]


async def test_missing_permissions_drop_the_part_without_raising(emu: DiscordEmulator,
                                                                 client: discord.Client) -> None:
    sink = channel_sink(client, emu.channel_id)
    ref = await sink.post("hello", part=0)
    emu.missing_permissions("PATCH", r"/messages/\d+$")
    await sink.edit(ref, "hello again", final=False)
    calls = len(emu.calls)
    await sink.edit(ref, "hello, final", final=True)
    assert len(emu.calls) == calls  # the part is given up: no more calls for it
    emu.missing_permissions("POST", r"/messages$")
    assert (await sink.post("more", part=1)).startswith("lost:SB-")


async def test_a_failed_final_edit_is_tried_once_more(emu: DiscordEmulator, client: discord.Client,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_module, "FINAL_RETRY_DELAY_S", 0.01)
    sink = channel_sink(client, emu.channel_id)
    ref = await sink.post("almost", part=0)
    emu.inject("PATCH", r"/messages/\d+$", status=400, code=50035, message="Invalid Form Body")
    await sink.edit(ref, "done", final=True)
    assert emu.bot_messages(emu.channel_id)[0].content == "done"


async def test_an_interaction_is_answered_in_its_response_then_follow_ups(emu: DiscordEmulator,
                                                                         client: discord.Client) -> None:
    dm = emu.dm_channel(emu.user_id)
    interaction = await _deferred(emu, client, dm)
    hook = InteractionWebhook(client.http, application_id=int(emu.app_id), token=interaction.token)
    sink = DiscordSink(client, ReplyTarget(channel_id=int(dm)), hook=hook, original_free=True, message_id="m1")
    first, second = await sink.post("one", part=0), await sink.post("two", part=1)
    await sink.edit(first, "one, final", final=True)
    await sink.edit(second, "two, final", final=True)
    assert first == "original" and second.startswith("followup:")
    assert [m.content for m in emu.bot_messages(dm)] == ["one, final", "two, final"]
    assert emu.messages[interaction.original_id or ""].content == "one, final"


async def test_factory_keeps_the_interaction_only_if_its_token_outlives_the_run(emu: DiscordEmulator,
                                                                               client: discord.Client) -> None:
    dm = emu.dm_channel(emu.user_id)
    interaction = await _deferred(emu, client, dm)
    factory = DiscordSinkFactory(lambda: client, run_timeout_s=600)
    target = ReplyTarget(channel_id=int(dm), application_id=int(emu.app_id), token=interaction.token,
                         token_expires_at=time.time() + 900)
    fresh = await factory.open(message=_inbound(target), existing_refs={})
    assert await fresh.post("in the response", part=0) == "original"

    late = ReplyTarget(channel_id=int(dm), application_id=int(emu.app_id), token=interaction.token,
                       token_expires_at=time.time() + 300)
    stale = await factory.open(message=_inbound(late), existing_refs={})
    assert (await stale.post("in the channel", part=0)).startswith("message:")
    assert emu.messages[interaction.original_id or ""].content == "The answer follows below."


async def _deferred(emu: DiscordEmulator, client: discord.Client, channel: str) -> EmuInteraction:
    """An interaction in ``channel``, deferred as the adapter does (no gateway here: the test acks it)."""
    interaction = await emu.slash("ask", [{"name": "prompt", "type": 3, "value": "x"}], channel_id=channel,
                                  deliver=False)
    await client.http.request(
        discord.http.Route("POST", "/interactions/{webhook_id}/{webhook_token}/callback",
                           webhook_id=int(interaction.id), webhook_token=interaction.token), json={"type": 5})
    return interaction


def _inbound(target: ReplyTarget) -> InboundMessage:
    return InboundMessage(event_id="e1", conversation="discord:dm:1", text="x", reply_to=target.to_reply_to(),
                          place=Place(platform="discord", channel="1", user="2", is_dm=True))
