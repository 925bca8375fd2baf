"""The hot-path changes the benchmark led to, held to their contracts.

- ``Gateway.has_conversation`` asks Redis only about conversations it has not seen lately;
- the Slack sink's ``working()`` returns before Slack answers, and the indicator still comes first.
"""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from bots.slack.events import reply_to
from bots.slack.sink import SlackSinkFactory
from core import gateway as gateway_module
from core.config import parse_config
from core.gateway import Gateway
from core.keys import Keys
from core.models import InboundMessage, Place
from core.store import Store, StoreLimits
from tests.emulators.slack import SlackEmulator

THREAD = "1700000000.000100"


def message(conversation: str, event: str = "e1") -> InboundMessage:
    return InboundMessage(
        event_id=event, conversation=conversation, text="hi",
        place=Place(platform="slack", workspace="T0TEAM", channel="C1", user="U0ALICE"),
        reply_to=reply_to(team="T0TEAM", channel="C1", thread_ts=THREAD, message_ts=THREAD, user="U0ALICE",
                          is_dm=False),
    )


class CountingStore(Store):
    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis, keys=Keys(), limits=StoreLimits())
        self.lookups = 0

    async def has_conversation(self, conversation: str) -> bool:
        self.lookups += 1
        return await super().has_conversation(conversation)


@pytest.fixture
def gateway(redis_client: aioredis.Redis) -> Gateway:
    config = parse_config({"profiles": {"p": {"model": "m", "instructions": "x"}}}, source="(test)", env={})
    return Gateway(store=CountingStore(redis_client), config=config)


async def test_a_conversation_seen_here_needs_no_redis_lookup(gateway: Gateway) -> None:
    store = gateway.store
    assert isinstance(store, CountingStore)
    assert not await gateway.has_conversation("slack:T:C1:1")
    assert not await gateway.has_conversation("slack:T:C1:1")  # unknown ones are always asked: it may appear
    assert store.lookups == 2
    await gateway.accept(message("slack:T:C1:1"))
    assert await gateway.has_conversation("slack:T:C1:1")
    assert store.lookups == 2


async def test_a_conversation_another_process_started_is_asked_once_then_known(
        gateway: Gateway, redis_client: aioredis.Redis) -> None:
    other = Gateway(store=Store(redis_client, keys=Keys(), limits=StoreLimits()), config=gateway.config)
    await other.accept(message("slack:T:C1:2"))
    store = gateway.store
    assert isinstance(store, CountingStore)
    assert await gateway.has_conversation("slack:T:C1:2")
    assert await gateway.has_conversation("slack:T:C1:2")
    assert store.lookups == 1


async def test_knowledge_expires_and_is_bounded(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    store = gateway.store
    assert isinstance(store, CountingStore)
    await gateway.accept(message("slack:T:C1:3"))
    now = time.monotonic()
    monkeypatch.setattr(gateway_module.time, "monotonic", lambda: now + gateway_module.KNOWN_FOR_S + 1)
    assert await gateway.has_conversation("slack:T:C1:3")
    assert store.lookups == 1  # asked again after KNOWN_FOR_S
    monkeypatch.setattr(gateway_module, "KNOWN_MAX", 2)
    for i in range(4):
        await gateway.accept(message(f"slack:T:C2:{i}", event=f"e{i}"))
    assert len(gateway._known) == 2  # the oldest were forgotten




async def test_working_returns_before_slack_answers_and_the_status_still_comes_first(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    sink = await factory.open(message=message("slack:T:C1:4"), existing_refs={})
    await sink.working()
    assert emu.methods() == []  # nothing sent yet: the caller goes on (to the backend) at once
    ref = await sink.post("Hello", part=0)
    await sink.edit(ref, "Hello there", final=True)
    await sink.done()
    assert emu.methods() == ["assistant.threads.setStatus", "chat.startStream", "chat.stopStream"]
    assert emu.status_shown("C1", THREAD) == ""  # cleared by Slack with the answer's first message
    assert not factory.indicators


async def test_done_without_an_answer_waits_for_the_indicator_then_clears_it(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    sink = await factory.open(message=message("slack:T:C1:5"), existing_refs={})
    await sink.working()
    await sink.done()
    assert emu.statuses == [("C1", THREAD, "is thinking…"), ("C1", THREAD, "")]
