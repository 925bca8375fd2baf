"""Admin features on Slack, end to end: signed slash commands and events into the real Bolt app, core on
a real Redis, the Assistants emulator; rights asked of the Slack emulator (``users.info``,
``usergroups.users.list``) at the moment of the call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import RedisServer
from tests.integration.admin_support import OPS, instructions_used, redis_state
from tests.integration.test_slack_adapter import C, World, open_world, wait_until

OTHER = "C0OTHER"
ADMIN, BOSS, LEAD, ALICE = "U0ADMIN", "U0BOSS", "U0LEAD", "U0ALICE"


async def command(world: World, text: str, *, user: str = ALICE, channel: str = C) -> str:
    payload = world.emu.slash_command(text=text, channel=channel, user=user)
    delivery = await world.emu.deliver(world.url, payload, form=True)
    assert delivery.status == 200, delivery
    answer: dict[str, Any] = json.loads(delivery.body)
    assert answer["response_type"] == "ephemeral"
    return str(answer["text"])


@pytest.fixture
async def world(redis_server: RedisServer, redis_client: Redis) -> AsyncIterator[World]:
    extra = {"profiles": OPS, "slack": {"admins": [BOSS], "admin_groups": ["S0LEADS"]}}
    async with open_world(redis_server.url, extra_config=extra) as w:
        w.emu.users[ADMIN] = {"is_admin": True}
        w.emu.usergroups["S0LEADS"] = [LEAD]
        yield w


async def ask(world: World, text: str, channel: str = C) -> None:
    mention = world.emu.mention_event(text=text, channel=channel)
    assert (await world.deliver(mention)).status == 200
    await world.answered(channel, mention["ts"])


async def test_workspace_admin_binds_the_channel_and_the_next_message_uses_it(world: World) -> None:
    await ask(world, "before")
    answer = await command(world, "use ops", user=ADMIN)
    assert answer.startswith("Done: `ops` is now chosen for this channel.")
    assert "*ops* answers from the next message on: bound to this channel" in answer
    assert world.emu.calls_to("users.info")[-1].args["user"] == ADMIN  # asked at the moment of the call
    assert "*ops* answers here: bound to this channel (set by an admin)" in await command(world, "show")
    await ask(world, "after")
    assert instructions_used(world.stack.emulator) == ["Be helpful.", "You are ops."]
    assert "Nothing changed: `ops` was already chosen" in await command(world, "use ops", user=ADMIN)


async def test_non_admin_is_refused_and_nothing_changes_in_redis(world: World, redis_client: Redis) -> None:
    before = await redis_state(redis_client)
    answer = await command(world, "use ops")
    assert answer.startswith("Only workspace admins and owners, and the people and user groups named")
    assert answer.endswith("Nothing changed.")
    assert await redis_state(redis_client) == before
    assert [c.args["user"] for c in world.emu.calls_to("users.info")] == [ALICE]
    assert [c.args["usergroup"] for c in world.emu.calls_to("usergroups.users.list")] == ["S0LEADS"]
    assert "from the config file" in await command(world, "show")


async def test_config_admins_and_user_group_members_may_bind(world: World) -> None:
    assert (await command(world, "use ops", user=BOSS)).startswith("Done")
    assert not world.emu.calls_to("users.info")  # listed in slack.admins: no need to ask
    assert (await command(world, "use helper", user=LEAD)).startswith("Done: `helper` is now chosen")
    assert world.emu.calls_to("usergroups.users.list")[-1].args["usergroup"] == "S0LEADS"


async def test_unknown_profile_lists_the_profiles_and_bad_syntax_shows_usage(world: World) -> None:
    answer = await command(world, "use nope", user=ADMIN)
    assert answer == "There is no profile `nope`. Profiles: `helper`, `ops`. Nothing changed."
    assert (await command(world, "use", user=ADMIN)).startswith("Usage: `use <profile>`")
    assert (await command(world, "use a b", user=ADMIN)).startswith("Usage")
    assert (await command(world, "use ops --everywhere", user=ADMIN)).startswith("Usage")


async def test_workspace_default_channel_override_clear_and_audit(world: World) -> None:
    gateway = world.stack.runtime.gateway
    answer = await command(world, "use ops --workspace", user=ADMIN)
    assert answer.startswith("Done: `ops` is now chosen for this workspace/server.")
    assert "the default for this workspace/server (set by an admin)" in await command(world, "show", channel=OTHER)
    await command(world, "use helper", user=ADMIN)
    assert "*helper* answers here: bound to this channel" in await command(world, "show")
    answer = await command(world, "use --clear", user=ADMIN)
    assert answer.startswith("Done: the choice for this channel (`helper`) is removed.")
    assert "*ops* answers from the next message on: the default for this workspace/server" in answer
    again = await command(world, "use --clear", user=ADMIN)
    assert again == "Nothing changed: this channel had no choice of its own."

    history = await gateway.binding_log.history()
    team = world.emu.team_id
    assert [(c.where, c.old, c.new, c.actor, c.via) for c in history] == [
        (f"slack/{team}/*", None, "ops", ADMIN, "chat"),
        (f"slack/{team}/{C}", None, "helper", ADMIN, "chat"),
        (f"slack/{team}/{C}", "helper", None, ADMIN, "chat"),
    ]
    assert history[0].at <= history[1].at <= history[2].at


async def test_dm_binds_only_the_workspace_default(world: World) -> None:
    answer = await command(world, "use ops", user=ADMIN, channel="D0ADMIN")
    assert "not in a direct message: add `--workspace`" in answer
    assert (await command(world, "use ops --workspace", user=ADMIN, channel="D0ADMIN")).startswith("Done")


async def test_allowlisted_channels_only_and_the_refusal_is_said_once(
        redis_server: RedisServer, redis_client: Redis) -> None:
    async with open_world(redis_server.url, extra_config={"access": {"slack": {"channels": [C]}}}) as world:
        emu = world.emu
        first = emu.mention_event(text="hello?", channel=OTHER)
        assert (await world.deliver(first)).status == 200
        await wait_until(lambda: bool(emu.bot_messages(OTHER)))
        [notice] = emu.bot_messages(OTHER)
        assert notice.thread_ts == first["ts"] and "not enabled in this channel" in notice.text
        for text in ("anyone?", "hello??"):
            assert (await world.deliver(emu.mention_event(text=text, channel=OTHER))).status == 200
        await asyncio.sleep(0.3)
        assert len(emu.bot_messages(OTHER)) == 1  # told once, not at every mention
        assert world.stack.emulator.state.threads == {} and not await redis_client.keys("*:inbox:*")
        assert "not enabled in this channel" in await command(world, "show", channel=OTHER)
        assert "`helper`" in await command(world, "list", channel=OTHER)
        await ask(world, "allowed here")


async def test_over_the_rate_limit_is_told_when_to_retry_and_nothing_is_queued(
        redis_server: RedisServer, redis_client: Redis) -> None:
    limited = {"profiles": {"helper": {"model": "emulator-1", "instructions": "Be helpful.",
                                       "rate_limit": {"per_user": "2/minute"}}}}
    async with open_world(redis_server.url, extra_config=limited) as world:
        emu = world.emu
        for text in ("one", "two"):
            await ask(world, text)
        third = emu.mention_event(text="three", channel=C)
        assert (await world.deliver(third)).status == 200
        await wait_until(lambda: bool(emu.bot_messages(C, third["ts"])))
        [notice] = emu.bot_messages(C, third["ts"])
        assert notice.text.startswith("You're sending messages faster than this assistant allows (2 per minute")
        seconds = int(notice.text.rsplit("Try again in ", 1)[1].split(" ")[0])
        assert 55 <= seconds <= 60
        await asyncio.sleep(0.3)
        assert len(world.stack.emulator.state.runs) == 2
        assert not await redis_client.keys(f"*:inbox:slack:{emu.team_id}:{C}:{third['ts']}")
        other = emu.mention_event(text="I may", channel=C, user="U0BOB")
        await world.deliver(other)
        await world.answered(C, other["ts"])
