"""Bindings, their audit trail and rate limits in core, on a real Redis with the Assistants emulator."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from core.audit import BindingLog
from core.gateway import Gateway, RateLimited
from core.models import InboundMessage, Place
from core.runtime import Runtime, open_runtime
from tests.conftest import RedisServer
from tests.integration.admin_support import OPS, instructions_used
from tests.integration.harness import RecordingSinks, Stack, open_stack, working

CONV = "console:t:c1"


def place(channel: str = CONV, workspace: str = "t", user: str = "U1") -> Place:
    return Place(platform="console", workspace=workspace, channel=channel, user=user)


async def bind(stack: Stack, profile: str | None, *, channel: str = CONV, actor: str = "U0ADMIN") -> None:
    await stack.runtime.gateway.binding_log.change(platform="console", workspace="t", channel=channel,
                                                   profile=profile, actor=actor, via="chat")


@pytest.fixture
async def stack(redis_server: RedisServer, redis_client: Redis) -> AsyncIterator[Stack]:
    extra = {"profiles": {**OPS, "cfg-ws": {"model": "m", "instructions": "ws"},
                          "cfg-ch": {"model": "m", "instructions": "ch"},
                          "replayed": {"backend": "resp", "model": "emulator-r", "instructions": "Replayed."}},
             "backends": {"resp": {"kind": "responses", "state": "replay"}},
             "bindings": {"console": {"t": {"default": "cfg-ws", "c-config": "cfg-ch"}}}}
    async with open_stack(redis_server.url, extra_config=extra) as opened:
        yield opened


async def test_resolution_order_channel_then_workspace_then_global(stack: Stack) -> None:
    gateway = stack.runtime.gateway

    async def resolved(channel: str, workspace: str = "t") -> tuple[str, str, str]:
        binding = await gateway.binding(place(channel, workspace))
        return binding.profile, binding.source, binding.origin

    assert await resolved("x", workspace="elsewhere") == ("helper", "global", "config")
    assert await resolved("x") == ("cfg-ws", "workspace", "config")
    assert await resolved("c-config") == ("cfg-ch", "channel", "config")
    await gateway.binding_log.change(platform="console", workspace="t", channel="*", profile="ops", actor="a",
                                     via="cli")
    assert await resolved("x") == ("ops", "workspace", "runtime")
    assert await resolved("c-config") == ("cfg-ch", "channel", "config")  # a channel beats any workspace default
    await bind(stack, "helper", channel="c-config")
    assert await resolved("c-config") == ("helper", "channel", "runtime")
    await bind(stack, None, channel="c-config")
    assert await resolved("c-config") == ("cfg-ch", "channel", "config")


async def test_each_change_and_its_audit_entry_are_written_together(stack: Stack, redis_client: Redis) -> None:
    log = stack.runtime.gateway.binding_log
    assert await log.change(platform="console", workspace="t", channel=CONV, profile="ops", actor="U1",
                            via="chat") is not None
    assert await log.change(platform="console", workspace="t", channel=CONV, profile="ops", actor="U2",
                            via="chat") is None  # no change, no entry
    await log.change(platform="console", workspace="u", channel="*", profile="helper", actor="root", via="cli")
    await log.change(platform="console", workspace="t", channel=CONV, profile=None, actor="U1", via="chat")
    assert await redis_client.get(f"sb:binding:{{console:t}}:{CONV}") is None
    assert await redis_client.xlen("sb:audit:{console:t}") == 2
    history = await log.history()
    assert [(c.where, c.old, c.new, c.actor, c.via) for c in history] == [
        (f"console/t/{CONV}", None, "ops", "U1", "chat"),
        ("console/u/*", None, "helper", "root", "cli"),
        (f"console/t/{CONV}", "ops", None, "U1", "chat"),
    ]
    assert [c.new for c in await log.history(platform="console", workspace="u")] == ["helper"]
    assert len(await log.history(limit=2)) == 2


async def test_the_trail_is_bounded(stack: Stack, redis_client: Redis) -> None:
    log = BindingLog(stack.runtime.store.redis, keys=stack.runtime.store.keys, max_entries=5)
    for i in range(12):
        await log.change(platform="console", workspace="t", channel=CONV, profile="ops" if i % 2 else "helper",
                         actor="a", via="cli")
    assert await redis_client.xlen("sb:audit:{console:t}") == 5
    assert [c.new for c in await log.history(limit=0)] == ["ops", "helper", "ops", "helper", "ops"]


async def test_rebinding_applies_to_the_next_message_and_keeps_the_thread(stack: Stack) -> None:
    assert (await stack.ask("one")).text.endswith("(message 1 in this thread)")
    await bind(stack, "ops")
    assert (await stack.ask("two")).text.endswith("(message 2 in this thread)")  # same thread, new assistant
    assert instructions_used(stack.emulator) == ["ws", "You are ops."]
    await bind(stack, "replayed")  # another backend: the conversation gets a thread there
    assert (await stack.ask("three")).text.endswith("(message 1 in this thread)")
    await bind(stack, "ops")
    assert (await stack.ask("four")).text.endswith("(message 3 in this thread)")  # back on the first thread
    assert len(stack.emulator.state.threads) == 1


@dataclass
class Gateways:
    """Two gateways sharing one Redis and one backend, each with its own runtime and worker."""

    first: Stack
    second: Runtime
    second_sinks: RecordingSinks
    accepted: list[str] = field(default_factory=list)

    async def send(self, via: Gateway, text: str, *, user: str = "U1", channel: str = "c1",
                   event_id: str | None = None) -> None:
        message = InboundMessage(event_id=event_id or uuid.uuid4().hex, conversation=f"console:t:{channel}",
                                 text=text, place=place(channel, user=user))
        accepted = await via.accept(message)
        if not accepted.duplicate:
            self.accepted.append(accepted.message_id)

    async def answered(self) -> None:
        """Every accepted message got its answer, from whichever gateway's worker took it."""
        for message_id in self.accepted:
            waits = [asyncio.ensure_future(sinks.reply(message_id).done.wait())
                     for sinks in (self.first.sinks, self.second_sinks)]
            done, pending = await asyncio.wait(waits, timeout=15, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            assert done, f"no answer to {message_id}"


@contextlib.asynccontextmanager
async def two_gateways(redis_url: str, limits: dict[str, Any]) -> AsyncIterator[Gateways]:
    extra = {"profiles": {"helper": {"model": "emulator-1", "instructions": "Be helpful.", "rate_limit": limits}}}
    async with open_stack(redis_url, extra_config=extra) as first, \
            open_runtime(first.settings, first.runtime.config, redis_url=redis_url) as second:
        assert first.runtime.store.redis is not second.store.redis
        sinks = RecordingSinks()
        second.gateway.register_platform("console", sinks)
        async with working(second):
            gateways = Gateways(first, second, sinks)
            yield gateways
            await gateways.answered()


async def test_rate_limit_holds_across_two_gateways(redis_server: RedisServer, redis_client: Redis) -> None:
    async with two_gateways(redis_server.url, {"per_user": "3/minute", "per_channel": "4/minute"}) as both:
        a, b = both.first.runtime.gateway, both.second.gateway
        await both.send(a, "1")
        await both.send(b, "2")
        await both.send(a, "3", event_id="redelivered")
        await both.send(b, "3", event_id="redelivered")  # a redelivery is not counted again
        with pytest.raises(RateLimited) as refused:
            await both.send(b, "4")
        assert refused.value.user_message.startswith("You're sending messages faster than this assistant allows "
                                                     "(3 per minute per person). Try again in ")
        assert 55 <= refused.value.retry_after_s <= 60
        await both.send(a, "from bob", user="U2")  # the channel's 4th
        with pytest.raises(RateLimited, match=r"This channel has reached this assistant's limit \(4 per minute\)"):
            await both.send(a, "from carol", user="U3")
        await both.send(b, "elsewhere", user="U3", channel="c2")
        assert len(both.accepted) == 5
        assert len(await redis_client.keys("*:msg:*")) == 5  # refused messages left nothing behind


async def test_the_window_slides(redis_server: RedisServer, redis_client: Redis) -> None:
    async with two_gateways(redis_server.url, {"per_user": "2/1s"}) as both:
        a, b = both.first.runtime.gateway, both.second.gateway
        await both.send(a, "1")
        await both.send(b, "2")
        with pytest.raises(RateLimited) as refused:
            await both.send(a, "3")
        assert refused.value.retry_after_s == 1
        await asyncio.sleep(1.05)
        await both.send(b, "4")
