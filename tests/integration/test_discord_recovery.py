"""A Discord answer is never posted twice after a crash: the nonce Discord deduplicates on, and the parts
``DiscordSink.posted_parts`` finds in the channel once that window has passed.

A crash is played by hand (the worker is drained): an attempt runs through the real engine and dies
like ``kill -9`` right after Discord took a post, before Redis recorded it; the next attempt, with
another lease, then answers the message. Discord is the emulator, reached by the unmodified
discord.py client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import discord
import pytest

from bots.discord.origin import ReplyTarget
from bots.discord.sink import DiscordSink, holds_one_conversation, part_nonce
from core.emulator.script import long_answer
from core.models import InboundMessage, RunRef
from core.store import Pending
from tests.emulators.discord import DiscordEmulator
from tests.integration import test_discord, test_discord_sink
from tests.integration.test_discord import Env, prompt, said

make_env = test_discord.make_env
emu = test_discord_sink.emu
client = test_discord_sink.client

LONG = "tell me everything !long=4500"  # three parts of at most 2000 characters


class Killed(BaseException):
    """What ``kill -9`` does to an attempt: it stops dead, whatever it was doing."""


@dataclass
class Crashes:
    """Plays the attempts at answering one conversation, as gateway processes would."""

    env: Env
    monkeypatch: pytest.MonkeyPatch
    sinks: list[DiscordSink] = field(default_factory=list)
    pending: Pending | None = None
    """The message the latest attempt answered."""

    async def head(self, conversation: str, token: str) -> Pending:
        """Take the conversation's lease and wait for its first unanswered message."""
        store = self.env.stack.runtime.store
        async with asyncio.timeout(10):
            while True:  # the message may still be on its way into the inbox
                step = await store.claim(conversation, token, deadline_at=time.time() + 600, entries=[])
                if step.pending is not None:
                    self.pending = step.pending
                    return step.pending
                await asyncio.sleep(0.02)

    async def killed(self, conversation: str, *, before_recording_part: int) -> None:
        """An attempt that dies right after Discord took part ``before_recording_part``, before its record."""
        store = self.env.stack.runtime.store
        pending = await self.head(conversation, "dead")
        real, real_run = store.record, store.record_run

        def dies_at(refs: str | None) -> bool:
            return str(before_recording_part) in json.loads(refs or "{}")

        async def record(message: InboundMessage, token: str, **fields: str) -> None:
            if dies_at(fields.get("refs")):
                raise Killed
            await real(message, token, **fields)

        async def record_run(message: InboundMessage, token: str, run: RunRef, *, refs: str | None = None) -> None:
            if dies_at(refs):  # the first part's record can carry the run's
                raise Killed
            await real_run(message, token, run, refs=refs)

        self.monkeypatch.setattr(store, "record", record)
        self.monkeypatch.setattr(store, "record_run", record_run)
        try:
            with pytest.raises(Killed):
                await self.env.stack.runtime.engine.answer(pending, "dead")
        finally:
            self.monkeypatch.setattr(store, "record", real)
            self.monkeypatch.setattr(store, "record_run", real_run)
        await self.sinks[-1].done()  # the process is gone, and its typing indicator with it
        await store.redis.delete(store.keys.lease(conversation))  # the lease expires

    async def started_only(self, conversation: str) -> None:
        """An attempt that died after recording that it started, before it posted anything."""
        store = self.env.stack.runtime.store
        pending = await self.head(conversation, "dead")
        await store.record(pending.message, "dead", status="starting", attempts="1")
        await store.redis.delete(store.keys.lease(conversation))

    async def next(self, conversation: str) -> str:
        """The next attempt, to the end; returns the final status."""
        runtime = self.env.stack.runtime
        pending = await self.head(conversation, "next")
        status = await runtime.engine.answer(pending, "next")
        await runtime.store.complete(conversation, "next", pending.message.id, status=status)
        await runtime.store.redis.delete(runtime.store.keys.lease(conversation))
        return status


@pytest.fixture
async def crashes(make_env: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Crashes:
    env: Env = await make_env()
    await env.stack.runtime.worker.drain(0)  # nobody answers on their own: the test plays every attempt
    played = Crashes(env, monkeypatch)
    factory = env.stack.runtime.gateway.sinks["discord"]
    open_sink = factory.open

    async def opened(**kwargs: Any) -> Any:
        sink = await open_sink(**kwargs)
        played.sinks.append(sink)
        return sink

    monkeypatch.setattr(factory, "open", opened)
    return played


def creates(emu: DiscordEmulator, channel: str) -> list[Any]:
    return emu.calls_to("POST", rf"^/channels/{channel}/messages$")


# --- end to end: one message per part, whatever was recorded ------------------------------------

async def test_a_part_posted_again_within_the_window_is_the_message_the_dead_attempt_made(crashes: Crashes) -> None:
    emu = crashes.env.emu
    dm = emu.dm_channel(emu.user_id)
    await emu.user_message("hello there", channel_id=dm)
    await crashes.killed(f"discord:dm:{dm}", before_recording_part=0)
    [orphan] = emu.bot_messages(dm)
    assert orphan.content and not said("hello there")(orphan.content)  # the answer's first words only

    assert await crashes.next(f"discord:dm:{dm}") == "answered"
    [answer] = emu.bot_messages(dm)
    assert answer.id == orphan.id and said("hello there")(answer.content)
    first, again = creates(emu, dm)
    assert first.json["nonce"] == again.json["nonce"] and again.json["enforce_nonce"] is True
    assert not emu.calls_to("GET", rf"^/channels/{dm}/messages$")  # part 0 in a DM replies to nothing: no search


async def test_after_the_window_the_reply_to_the_person_is_found_and_adopted(crashes: Crashes) -> None:
    emu = crashes.env.emu
    conversation = f"discord:{emu.guild_id}:{emu.channel_id}"
    asked = await emu.user_message("hello there", mention_bot=True)
    await crashes.killed(conversation, before_recording_part=0)
    emu.expire_nonces()  # the fleet was down for longer than Discord remembers nonces

    assert await crashes.next(conversation) == "answered"
    [answer] = emu.bot_messages(emu.channel_id)
    assert said("hello there")(answer.content) and answer.reference_id == asked
    assert len(creates(emu, emu.channel_id)) == 1
    store = crashes.env.stack.runtime.store
    assert crashes.pending is not None
    record = await store.redis.hgetall(store.keys.msg(conversation, crashes.pending.message.id))
    assert json.loads(record["refs"]) == {"0": f"message:{answer.id}"}


async def test_a_later_part_is_found_after_the_recorded_ones_in_a_dm(crashes: Crashes) -> None:
    emu = crashes.env.emu
    dm = emu.dm_channel(emu.user_id)
    await emu.user_message(LONG, channel_id=dm)
    await crashes.killed(f"discord:dm:{dm}", before_recording_part=1)
    emu.expire_nonces()
    assert len(emu.bot_messages(dm)) == 2

    assert await crashes.next(f"discord:dm:{dm}") == "answered"
    parts = emu.bot_messages(dm)
    assert len(parts) == 3 and len(creates(emu, dm)) == 3
    assert parts[0].content.startswith("[emulator] The emulator writes")
    assert parts[2].content.rstrip().endswith(long_answer(4500).rstrip()[-40:])
    assert len({p.content for p in parts}) == 3


async def test_a_follow_up_of_an_interaction_is_found_by_its_metadata(crashes: Crashes) -> None:
    emu = crashes.env.emu
    thread = emu.add_thread(emu.channel_id, "people talking")
    interaction = await emu.slash("ask", prompt(LONG), channel_id=thread)
    await crashes.killed(f"discord:{emu.guild_id}:{thread}", before_recording_part=1)
    assert [m.kind for m in emu.bot_messages(thread)] == ["original", "followup"]

    assert await crashes.next(f"discord:{emu.guild_id}:{thread}") == "answered"
    parts = emu.bot_messages(thread)
    assert [m.kind for m in parts] == ["original", "followup", "followup"]
    assert parts[0].id == interaction.original_id
    assert parts[2].content.rstrip().endswith(long_answer(4500).rstrip()[-40:])
    assert len(emu.calls_to("POST", r"^/webhooks/\d+/[^/]+$")) == 2


async def test_an_earlier_answer_is_never_taken_for_this_one(crashes: Crashes) -> None:
    emu = crashes.env.emu
    conversation = f"discord:{emu.guild_id}:{emu.channel_id}"
    first = await emu.user_message("one", mention_bot=True)
    second = await emu.user_message("two", mention_bot=True)
    assert await crashes.next(conversation) == "answered"  # answered after "two" was sent
    [one] = emu.bot_messages(emu.channel_id)
    written = list(one.history)
    await crashes.started_only(conversation)
    emu.expire_nonces()

    assert await crashes.next(conversation) == "answered"
    one, two = emu.bot_messages(emu.channel_id)
    assert (one.reference_id, two.reference_id) == (first, second)
    assert one.history == written and said("one")(one.content)  # never touched again
    assert said("two", 2)(two.content)


# --- the sink on its own ----------------------------------------------------------------------

def channel_sink(client: discord.Client, channel: str, message_id: str = "m1", *,
                 refs: dict[str, str] | None = None, one_conversation: bool = True,
                 reference_id: int | None = None) -> DiscordSink:
    return DiscordSink(client, ReplyTarget(channel_id=int(channel), reference_id=reference_id), hook=None,
                       original_free=False, message_id=message_id, existing_refs=refs,
                       one_conversation=one_conversation)


async def test_each_part_and_each_answer_has_its_own_nonce(emu: DiscordEmulator, client: discord.Client) -> None:
    first = channel_sink(client, emu.channel_id, "m1")
    refs = [await first.post("one", part=0), await first.post("two", part=1)]
    refs.append(await channel_sink(client, emu.channel_id, "m2").post("three", part=0))
    assert [m.content for m in emu.bot_messages(emu.channel_id)] == ["one", "two", "three"]
    assert len(set(refs)) == 3
    nonces = [call.json["nonce"] for call in creates(emu, emu.channel_id)]
    assert nonces == [part_nonce("m1", 0, 0), part_nonce("m1", 1, 0), part_nonce("m2", 0, 0)]
    assert len(set(nonces)) == 3 and all(len(n) <= 25 for n in nonces)


async def test_the_same_part_posted_again_is_one_message_with_the_new_text(emu: DiscordEmulator,
                                                                          client: discord.Client) -> None:
    dead = await channel_sink(client, emu.channel_id).post("first words", part=0)
    again = await channel_sink(client, emu.channel_id).post("first words and more", part=0)
    [message] = emu.bot_messages(emu.channel_id)
    assert dead == again == f"message:{message.id}"
    assert message.history == ["first words", "first words and more"]


async def test_a_part_deleted_in_the_window_is_posted_under_its_next_nonce(emu: DiscordEmulator,
                                                                         client: discord.Client) -> None:
    dead = await channel_sink(client, emu.channel_id).post("first words", part=0)
    del emu.messages[dead.split(":")[1]]  # someone deleted it
    sink = channel_sink(client, emu.channel_id)
    ref = await sink.post("first words again", part=0)
    [message] = emu.bot_messages(emu.channel_id)
    assert ref == f"message:{message.id}" != dead and message.content == "first words again"
    assert [c.status for c in creates(emu, emu.channel_id)] == [200, 404, 200]
    assert creates(emu, emu.channel_id)[2].json["nonce"] == part_nonce("m1", 0, 1)


async def test_a_later_part_is_not_guessed_where_answers_interleave(emu: DiscordEmulator,
                                                                     client: discord.Client) -> None:
    recorded = await channel_sink(client, emu.channel_id, "mine").post("part one", part=0)
    await channel_sink(client, emu.channel_id, "bob's").post("bob's answer", part=0)  # scope: user
    shared = channel_sink(client, emu.channel_id, "mine", refs={"0": recorded}, one_conversation=False)
    assert await shared.posted_parts() == {}


async def test_a_later_part_is_the_next_plain_message_in_a_conversation_of_its_own(emu: DiscordEmulator,
                                                                                   client: discord.Client) -> None:
    recorded = await channel_sink(client, emu.channel_id).post("part one", part=0)
    await emu.user_message("someone talks meanwhile", deliver=False)
    orphan = await channel_sink(client, emu.channel_id, refs={"0": recorded}).post("part two", part=1)
    sink = channel_sink(client, emu.channel_id, refs={"0": recorded})
    assert await sink.posted_parts() == {1: orphan}
    third = await sink.post("part three", part=2)
    await sink.edit(orphan, "part two, final", final=True)
    assert [m.content for m in emu.bot_messages(emu.channel_id)] == ["part one", "part two, final", "part three"]
    assert creates(emu, emu.channel_id)[-1].json["nonce"] == part_nonce("m1", 2, 0) and third != orphan


async def test_part_zero_is_only_ever_the_reply_to_this_question(emu: DiscordEmulator,
                                                                client: discord.Client) -> None:
    asked = int(await emu.user_message("question", mention_bot=True, deliver=False))
    other = int(await emu.user_message("another question", mention_bot=True, deliver=False))
    await channel_sink(client, emu.channel_id, "other", reference_id=other).post("the other answer", part=0)
    sink = channel_sink(client, emu.channel_id, one_conversation=False, reference_id=asked)
    assert await sink.posted_parts() == {}
    mine = await channel_sink(client, emu.channel_id, reference_id=asked).post("this answer", part=0)
    found = channel_sink(client, emu.channel_id, one_conversation=False, reference_id=asked)
    assert await found.posted_parts() == {0: mine}


def test_which_channels_hold_one_conversation() -> None:
    assert holds_one_conversation("discord:dm:42", 42)
    assert holds_one_conversation("discord:7:42", 42)  # a channel (scope: channel) or a thread
    assert not holds_one_conversation("discord:7:42:9", 42)  # scope: user
    assert not holds_one_conversation("discord:7:43", 42)


# --- the emulator keeps Discord's rules ---------------------------------------------------------

async def test_emulator_answers_a_repeated_nonce_with_the_earlier_message(emu: DiscordEmulator,
                                                                          client: discord.Client) -> None:
    channel = client.get_partial_messageable(int(emu.channel_id))
    first = await channel.send("a", nonce="n1")  # discord.py sends enforce_nonce with every nonce
    assert (await channel.send("b", nonce="n1")).id == first.id
    assert len(emu.bot_messages(emu.channel_id)) == 1 and emu.messages[str(first.id)].content == "a"

    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=int(emu.channel_id))
    loose = await client.http.request(route, json={"content": "c", "nonce": "n1"})  # not enforced: a new one
    assert int(loose["id"]) != first.id
    emu.expire_nonces()
    assert (await channel.send("d", nonce="n1")).id not in (first.id, int(loose["id"]))

    gone = await channel.send("e", nonce="n2")
    del emu.messages[str(gone.id)]
    with pytest.raises(discord.NotFound) as refused:
        await channel.send("f", nonce="n2")
    assert refused.value.code == 10008


async def test_emulator_lists_a_channel_the_way_discord_does(emu: DiscordEmulator, client: discord.Client) -> None:
    ids = [int(await emu.user_message(f"m{i}", deliver=False)) for i in range(130)]
    oldest_after = await client.http.logs_from(int(emu.channel_id), 3, after=ids[0])
    assert [int(m["id"]) for m in oldest_after] == [ids[3], ids[2], ids[1]]  # the next three, newest first
    newest_before = await client.http.logs_from(int(emu.channel_id), 2, before=ids[10])
    assert [int(m["id"]) for m in newest_before] == [ids[9], ids[8]]
    channel = client.get_partial_messageable(int(emu.channel_id))
    history = [m.id async for m in channel.history(limit=None, after=discord.Object(ids[0]), oldest_first=True)]
    assert history == ids[1:]  # across pages of 100
