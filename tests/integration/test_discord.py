"""The Discord adapter end to end: the unmodified discord.py client against the local Discord emulator,
core's runtime on a real Redis, the real ``openai`` SDK against the Assistants emulator."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from bots.discord import DiscordAdapter
from bots.discord.sink import LIMIT_CHARS
from core.emulator.script import long_answer
from tests.conftest import RedisServer
from tests.emulators.discord import EPHEMERAL, DiscordEmulator, EmuMessage, RestCall
from tests.integration.harness import Stack, open_stack

MANAGE_GUILD = 1 << 5


@dataclass
class Env:
    stack: Stack
    emu: DiscordEmulator
    adapter: DiscordAdapter

    async def answer(self, channel_id: str, expected: Callable[[str], bool], *, after: int = 0,
                     timeout_s: float = 15) -> EmuMessage:
        """The bot's message in ``channel_id`` (skipping the first ``after``) once its text satisfies ``expected``."""
        def found() -> bool:
            return any(expected(m.content) for m in self.emu.bot_messages(channel_id)[after:])
        try:
            await self.emu.wait_until(found, timeout_s)
        except TimeoutError:
            seen = [m.history for m in self.emu.bot_messages(channel_id)]
            raise AssertionError(f"no such answer in {channel_id}; the bot wrote {seen}") from None
        return next(m for m in self.emu.bot_messages(channel_id)[after:] if expected(m.content))


def said(text: str, n: int = 1) -> Callable[[str], bool]:
    return lambda content: content == f"[emulator] You said: {text} (message {n} in this thread)"


@pytest.fixture
async def make_env(redis_server: RedisServer, redis_client: Redis) -> AsyncIterator[Callable[..., Any]]:
    """Builds the stack and a started adapter; ``discord_config``/``gateway`` go to those config sections."""
    opened: list[Env] = []
    stacks: list[Any] = []

    async def build(*, discord_config: dict[str, Any] | None = None, gateway: dict[str, Any] | None = None,
                    emulator: DiscordEmulator | None = None, wait_shards: int | None = None,
                    **overrides: Any) -> Env:
        context = open_stack(redis_server.url, extra_config={"discord": discord_config or {},
                                                             "gateway": gateway or {}})
        stacks.append(context)
        stack = await context.__aenter__()
        emu = emulator or DiscordEmulator()
        await emu.start()
        settings = stack.settings.model_copy(update={
            "discord_bot_token": SecretStr(emu.token), "discord_api_url": emu.rest_base,
            "discord_gateway_url": emu.gateway_url})
        adapter = DiscordAdapter(gateway=stack.runtime.gateway, settings=settings, config=stack.runtime.config,
                                 guild_ready_timeout_s=0.05, **overrides)
        env = Env(stack, emu, adapter)
        opened.append(env)
        await adapter.start()
        await emu.wait_ready(shards=wait_shards)
        return env

    yield build
    for env in opened:
        await _quiet(redis_client)
        await env.adapter.stop()
        await env.emu.stop()
    for context in reversed(stacks):
        await context.__aexit__(None, None, None)


async def _quiet(redis: Redis, timeout_s: float = 10) -> None:
    """Wait until no conversation is being answered (every lease released), so teardown cuts nothing short."""
    async with asyncio.timeout(timeout_s):
        while await redis.keys("*:lease:*"):  # noqa: ASYNC110 (state in Redis: nothing to wait on)
            await asyncio.sleep(0.02)


@pytest.fixture
async def env(make_env: Callable[..., Any]) -> Env:
    built: Env = await make_env()
    return built


def prompt(text: str) -> list[dict[str, Any]]:
    return [{"name": "prompt", "type": 3, "value": text}]


async def test_ask_defers_opens_a_thread_and_streams_the_answer_into_it(env: Env) -> None:
    emu = env.emu
    interaction = await emu.slash("ask", prompt("hello there !slow=2.4"))
    [thread] = await _threads(emu)
    answer = await env.answer(thread["id"], said("hello there"), after=0)

    assert interaction.ack_type == 5 and interaction.acked_at is not None
    assert interaction.acked_at - interaction.dispatched_at < 3.0
    kinds = [_kind(call, thread["id"]) for call in emu.calls if call.at >= interaction.dispatched_at]
    assert kinds[:3] == ["defer", "opener", "thread"]  # the defer before anything else
    assert kinds.count("post") == 1 and set(kinds[3:]) == {"typing", "post", "edit"}, kinds
    assert thread["name"] == "hello there !slow=2.4" and thread["id"] == interaction.original_id
    opener = emu.messages[interaction.original_id]
    assert opener.content.startswith(f"<@{emu.user_id}> asked:\n> hello there")
    assert [m.id for m in emu.bot_messages(thread["id"])] == [answer.id]  # exactly one answer
    assert len(answer.history) >= 2, answer.history  # posted with the first words, then grown by edits
    assert all(said("hello there")(h) or len(h) < len(answer.content) for h in answer.history)
    assert emu.calls_to("POST", rf"^/channels/{thread['id']}/typing$")


async def test_follow_up_in_the_bot_thread_needs_no_mention(env: Env) -> None:
    emu = env.emu
    await emu.slash("ask", prompt("first"))
    [thread] = await _threads(emu)
    await env.answer(thread["id"], said("first"))
    await emu.user_message("second", channel_id=thread["id"])
    await env.answer(thread["id"], said("second", 2))
    assert len(emu.bot_messages(thread["id"])) == 2


async def test_mention_in_a_channel_is_answered_as_a_reply(env: Env) -> None:
    emu = env.emu
    await emu.user_message("no mention, no answer")
    asked = await emu.user_message("what's up?", mention_bot=True)
    answer = await env.answer(emu.channel_id, said("what's up?"))
    assert answer.reference_id == asked
    assert len(emu.bot_messages(emu.channel_id)) == 1
    assert not emu.threads()


async def test_scope_user_gives_each_person_a_conversation(make_env: Callable[..., Any]) -> None:
    env = await make_env(discord_config={"scope": "user"})
    emu, bob = env.emu, env.emu.add_user("bob")
    await emu.user_message("alice here", mention_bot=True)
    await env.answer(emu.channel_id, said("alice here"))
    await emu.user_message("bob here", mention_bot=True, user_id=bob)
    await env.answer(emu.channel_id, said("bob here", 1))


async def test_dm_is_answered_in_the_dm(env: Env) -> None:
    emu = env.emu
    dm = emu.dm_channel(emu.user_id)
    await emu.user_message("hi in private", channel_id=dm)
    answer = await env.answer(dm, said("hi in private"))
    assert answer.reference_id is None
    await emu.user_message("again", channel_id=dm)
    await env.answer(dm, said("again", 2))


async def test_ask_in_a_dm_answers_in_the_interaction_response(env: Env) -> None:
    emu = env.emu
    interaction = await emu.slash("ask", prompt("private question"), channel_id=emu.dm_channel(emu.user_id))
    answer = await env.answer(interaction.channel_id, said("private question"))
    assert answer.id == interaction.original_id and answer.kind == "original"
    assert not emu.threads()


async def test_long_answer_is_split_into_several_messages(env: Env) -> None:
    emu = env.emu
    await emu.slash("ask", prompt("tell me everything !long=4500"))
    [thread] = await _threads(emu)
    ending = long_answer(4500).rstrip()[-40:]
    await env.answer(thread["id"], lambda c: c.rstrip().endswith(ending), timeout_s=20)
    messages = emu.bot_messages(thread["id"])
    assert len(messages) == 3
    assert all(1 <= len(m.content) <= LIMIT_CHARS for m in messages)
    assert messages[0].content.startswith("[emulator] The emulator writes")
    assert all(m.content.count("```") % 2 == 0 for m in messages)  # no part leaves a code block open


async def test_tool_call_end_to_end(env: Env) -> None:
    emu = env.emu
    await emu.slash("ask", prompt("what is the weather in Paris?"))
    [thread] = await _threads(emu)
    answer = await env.answer(thread["id"], lambda c: c.startswith("[emulator] The tool said:"))
    assert "Paris" in answer.content
    assert [body["context"]["platform"] for body in env.stack.weather.received] == ["discord"]


async def test_two_quick_messages_in_a_thread_are_answered_in_order(env: Env) -> None:
    emu = env.emu
    await emu.slash("ask", prompt("start"))
    [thread] = await _threads(emu)
    await env.answer(thread["id"], said("start"))
    await emu.user_message("one !slow=0.5", channel_id=thread["id"])
    await emu.user_message("two", channel_id=thread["id"])
    await env.answer(thread["id"], said("two", 3))
    contents = [m.content for m in emu.bot_messages(thread["id"])]
    assert contents == [said_text("start", 1), said_text("one", 2), said_text("two", 3)]


async def test_rate_limited_edits_are_retried_and_the_answer_completes(env: Env) -> None:
    emu = env.emu
    await emu.slash("ask", prompt("slowly please !slow=2.4"))
    [thread] = await _threads(emu)
    limited = emu.rate_limit_edits(times=2, retry_after_s=0.2)  # the answer's edits, not the opener's
    answer = await env.answer(thread["id"], said("slowly please"))
    assert limited.times == 0
    refused = [c for c in emu.calls if c.status == 429]
    assert [(c.method, c.path) for c in refused] == [("PATCH", f"/channels/{thread['id']}/messages/{answer.id}")] * 2
    assert len(emu.bot_messages(thread["id"])) == 1 and said("slowly please")(answer.content)


async def test_assistant_show_list_reset_are_ephemeral(env: Env) -> None:
    emu = env.emu
    replies = {}
    for sub in ("show", "list", "help"):
        interaction = await emu.slash("assistant", subcommand=sub)
        await emu.wait_until(lambda i=interaction: bool(i.original_id and emu.messages[i.original_id].content))
        message = emu.messages[interaction.original_id or ""]
        assert message.flags & EPHEMERAL
        replies[sub] = message.content
    assert "*helper* answers here" in replies["show"]
    assert "`helper`" in replies["list"]
    assert "reset" in replies["help"]

    await emu.user_message("remember me", mention_bot=True)
    await env.answer(emu.channel_id, said("remember me"))
    reset = await emu.slash("assistant", subcommand="reset")
    await emu.wait_until(lambda: bool(reset.original_id and emu.messages[reset.original_id].content))
    assert emu.messages[reset.original_id or ""].content.startswith("Done")
    await emu.user_message("who am I?", mention_bot=True)
    await env.answer(emu.channel_id, said("who am I?", 1))  # a new backend thread: message 1 again


async def test_assistant_use_binds_for_a_manage_server_member(env: Env) -> None:
    emu = env.emu  # more in test_admin_discord.py
    interaction = await emu.slash("assistant", [{"name": "profile", "type": 3, "value": "helper"}],
                                  subcommand="use", permissions=MANAGE_GUILD)
    await emu.wait_until(lambda: bool(interaction.original_id and emu.messages[interaction.original_id].content))
    assert emu.messages[interaction.original_id or ""].content.startswith("Done: `helper` is now chosen")


def _kind(call: RestCall, thread_id: str) -> str:
    routes = {("POST", r"/interactions/\d+/[^/]+/callback"): "defer",
              ("PATCH", r"/webhooks/\d+/[^/]+/messages/@original"): "opener",
              ("POST", r"/channels/\d+/messages/\d+/threads"): "thread",
              ("POST", rf"/channels/{thread_id}/typing"): "typing",
              ("POST", rf"/channels/{thread_id}/messages"): "post",
              ("PATCH", rf"/channels/{thread_id}/messages/\d+"): "edit"}
    return next((kind for (method, path), kind in routes.items()
                 if call.method == method and re.fullmatch(path, call.path)), str(call))


async def _threads(emu: DiscordEmulator, count: int = 1) -> list[dict[str, Any]]:
    await emu.wait_until(lambda: len(emu.threads()) >= count)
    return emu.threads()


def said_text(text: str, n: int) -> str:
    return f"[emulator] You said: {text} (message {n} in this thread)"
