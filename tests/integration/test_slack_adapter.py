"""The Slack adapter end to end: signed Events API requests and Socket Mode envelopes into the real
Bolt app, core with real Redis and the Assistants emulator, answers through the real slack-sdk
client into the local Slack emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from bots.slack import SlackAdapter
from core.errors import StoreUnavailable
from core.httpserver import HttpServer
from core.models import InboundMessage
from core.ports import ReplySink, ReplySinkFactory
from core.settings import Settings
from tests.conftest import RedisServer, free_port
from tests.emulators.slack import Delivery, Message, SlackEmulator
from tests.integration.harness import Stack, open_stack

C = "C0GENERAL"
DM = "D0ALICE"


class EndedSinks:
    """The adapter's reply sink factory, counting per (channel, thread) the answers whose sink is done:
    ``done()`` is awaited once per answer, after its last write, whatever the outcome."""

    def __init__(self, inner: ReplySinkFactory) -> None:
        self.inner = inner
        self.ended: Counter[tuple[str, str | None]] = Counter()

    async def open(self, *, message: InboundMessage, existing_refs: Mapping[str, str]) -> ReplySink:
        sink = await self.inner.open(message=message, existing_refs=existing_refs)
        done, where = sink.done, (message.reply_to["channel"], message.reply_to.get("thread_ts") or None)

        async def counted() -> None:
            await done()
            self.ended[where] += 1

        sink.done = counted  # type: ignore[method-assign]
        return sink


@dataclass
class World:
    emu: SlackEmulator
    stack: Stack
    adapter: SlackAdapter
    url: str
    sinks: EndedSinks

    async def deliver(self, event: dict[str, Any], **kwargs: Any) -> Delivery:
        return await self.emu.deliver(self.url, self.emu.event_callback(event), **kwargs)

    async def command(self, text: str, channel: str = C) -> dict[str, Any]:
        delivery = await self.emu.deliver(self.url, self.emu.slash_command(text=text, channel=channel), form=True)
        assert delivery.status == 200, delivery
        answer: dict[str, Any] = json.loads(delivery.body)
        return answer

    async def answered(self, channel: str, thread_ts: str | None, *, count: int = 1) -> list[Message]:
        """Wait until ``count`` answers ended in the thread (their sink's ``done()`` returned)."""
        await wait_until(lambda: self.sinks.ended[(channel, thread_ts)] >= count)
        return [m for m in self.emu.bot_messages(channel) if m.thread_ts == thread_ts]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def open_world(redis_url: str, *, socket_mode: bool = False,
                     extra_config: dict[str, Any] | None = None) -> AsyncIterator[World]:
    emu = SlackEmulator()
    await emu.start()
    try:
        async with open_stack(redis_url, extra_config=extra_config) as stack:
            settings = stack.settings.model_copy(update={
                "slack_bot_token": SecretStr(emu.bot_token), "slack_api_url": emu.base_url,
                "slack_signing_secret": None if socket_mode else SecretStr(emu.signing_secret),
                "slack_app_token": SecretStr(emu.app_token) if socket_mode else None,
            })
            adapter = SlackAdapter(gateway=stack.runtime.gateway, settings=settings, config=stack.runtime.config)
            port = free_port()
            server = HttpServer("127.0.0.1", port, [], routes=adapter.routes())
            await server.start()
            await adapter.start()
            sinks = EndedSinks(stack.runtime.gateway.sinks["slack"])
            stack.runtime.gateway.register_platform("slack", sinks)
            try:
                yield World(emu, stack, adapter, f"http://127.0.0.1:{port}/slack/events", sinks)
            finally:
                await adapter.stop()
                await server.stop()
    finally:
        await emu.stop()


@pytest.fixture
async def world(redis_server: RedisServer, redis_client: object) -> AsyncIterator[World]:
    async with open_world(redis_server.url) as w:
        yield w


def said(text: str, n: int = 1) -> str:
    return f"[emulator] You said: {text} (message {n} in this thread)"


async def test_mention_gets_one_streamed_answer_in_its_thread(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    emu = world.emu
    mention = emu.mention_event(text="hello there !slow=1.5", channel=C)
    delivery = await world.deliver(mention)
    assert (delivery.status, delivery.body) == (200, "")
    [answer] = await world.answered(C, mention["ts"])
    assert (answer.kind, answer.text, answer.streaming) == ("stream", said("hello there"), False)
    assert len(answer.edits) >= 3  # started, appended at least once, stopped
    calls = emu.methods()
    assert calls[0] == "auth.test"  # once, at start: no event waits for it
    assert calls[1:3] == ["assistant.threads.setStatus", "chat.startStream"]
    assert calls[-1] == "chat.stopStream"  # the status went with the answer's first message (Slack clears it)
    assert set(calls[3:-1]) == {"chat.appendStream"}
    assert emu.status_shown(C, mention["ts"]) == ""
    with capsys.disabled():
        print(f"\n[slack] calls for one mention: {calls}\n[slack] ack {delivery.elapsed_ms:.1f} ms")


async def test_ack_is_fast(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Ack = Bolt + one Redis round trip (the test Redis fsyncs every write); answers run meanwhile."""
    idle, busy = [], []
    for i in range(10):
        mention = world.emu.mention_event(text=f"q{i}", channel=C)
        delivery = await world.deliver(mention)
        assert delivery.status == 200
        idle.append(delivery.elapsed_ms)
        await world.answered(C, mention["ts"])
    for i in range(10):  # back to back: the answers of earlier mentions share the event loop
        busy.append((await world.deliver(world.emu.mention_event(text=f"b{i}", channel=C))).elapsed_ms)
    idle.sort()
    busy.sort()
    with capsys.disabled():
        print(f"\n[slack] ack ms, one at a time: median {idle[5]:.1f} max {idle[-1]:.1f}; "
              f"back to back: median {busy[5]:.1f} max {busy[-1]:.1f}")
    assert idle[5] < 100


async def test_follow_up_in_the_thread_without_mention_continues_the_conversation(world: World) -> None:
    emu = world.emu
    mention = emu.mention_event(text="first", channel=C)
    await world.deliver(mention)
    await world.answered(C, mention["ts"])
    follow_up = emu.message_event(text="second", channel=C, thread_ts=mention["ts"])
    assert (await world.deliver(follow_up)).status == 200
    answers = await world.answered(C, mention["ts"], count=2)
    assert [a.text for a in answers] == [said("first"), said("second", 2)]


async def test_thread_message_where_the_bot_has_no_conversation_is_ignored(world: World) -> None:
    event = world.emu.message_event(text="just people talking", channel=C, thread_ts="1700000000.000001")
    assert (await world.deliver(event)).status == 200
    await asyncio.sleep(0.3)
    assert world.emu.methods() == ["auth.test"]


async def test_dm_is_answered_at_top_level_and_continues(world: World) -> None:
    emu = world.emu
    for n, text in enumerate(["hi in private", "and again"], start=1):
        assert (await world.deliver(emu.message_event(text=text, channel=DM))).status == 200
        answers = await world.answered(DM, None, count=n)
        assert answers[-1].text == said(text, n)
    assert [m.kind for m in emu.bot_messages(DM)] == ["post", "post"]  # no thread: posted, not streamed
    assert len(emu.calls_to("reactions.add")) == 2


async def test_retry_of_the_same_event_gets_one_answer(world: World) -> None:
    emu = world.emu
    payload = emu.event_callback(emu.mention_event(text="only once", channel=C))
    first = await emu.deliver(world.url, payload)
    retry = await emu.deliver(world.url, payload, retry_num=1, retry_reason="http_timeout")
    assert (first.status, retry.status) == (200, 200)
    await world.answered(C, payload["event"]["ts"])
    await asyncio.sleep(0.3)
    assert len(emu.calls_to("chat.startStream")) == 1
    assert [m.text for m in emu.bot_messages(C)] == [said("only once")]


async def test_mention_and_message_events_of_one_message_get_one_answer(world: World) -> None:
    emu = world.emu
    top = emu.mention_event(text="start", channel=C)
    await world.deliver(top)
    await world.answered(C, top["ts"])
    ts = emu.next_ts()
    mention = emu.mention_event(text="both events", channel=C, ts=ts, thread_ts=top["ts"])
    plain = emu.message_event(text=mention["text"], channel=C, ts=ts, thread_ts=top["ts"])
    assert (await world.deliver(plain)).status == 200
    assert (await world.deliver(mention)).status == 200
    await world.answered(C, top["ts"], count=2)
    await asyncio.sleep(0.3)
    assert [m.text for m in emu.bot_messages(C, top["ts"])] == [said("start"), said("both events", 2)]


async def test_bad_signature_is_401_and_nothing_is_queued(world: World) -> None:
    payload = world.emu.event_callback(world.emu.mention_event(text="forged", channel=C))
    delivery = await world.emu.deliver(world.url, payload, secret="not-the-signing-secret")
    assert delivery.status == 401
    await asyncio.sleep(0.3)
    assert world.emu.methods() == ["auth.test"]
    key = f"slack:{world.emu.team_id}:{C}:{payload['event']['ts']}"
    assert not await world.stack.runtime.gateway.has_conversation(key)


async def test_own_and_other_bot_messages_are_ignored(world: World) -> None:
    emu = world.emu
    own = emu.message_event(text="my own answer", channel=DM, user=emu.bot_user_id, bot_id=emu.bot_id)
    other = emu.message_event(text="beep", channel=DM, bot_id="B0OTHER", subtype="bot_message")
    edit = emu.edit_event(channel=DM, ts="1700000000.000001", new_text="edited")
    for event in (own, other, edit):
        assert (await world.deliver(event)).status == 200
    await asyncio.sleep(0.3)
    assert world.emu.methods() == ["auth.test"]


async def test_url_verification(world: World) -> None:
    delivery = await world.emu.deliver(world.url, {"type": "url_verification", "challenge": "c-123", "token": "t"})
    assert (delivery.status, json.loads(delivery.body)) == (200, {"challenge": "c-123"})


async def test_assistant_command_show_list_reset_help(world: World) -> None:
    show = await world.command("show")
    assert show["response_type"] == "ephemeral"
    assert "helper" in show["text"] and "global default" in show["text"]
    assert show["blocks"] == [{"type": "markdown", "text": show["text"]}]
    assert "`helper`" in (await world.command("list"))["text"]
    assert "show" in (await world.command("help"))["text"]
    assert "Nothing changed" in (await world.command("use helper"))["text"]  # not an admin (test_admin_slack.py)
    emu = world.emu
    await world.deliver(emu.message_event(text="remember me", channel=DM))
    await world.answered(DM, None)
    assert "every new @mention" in (await world.command("reset"))["text"]
    assert "new conversation" in (await world.command("reset", channel=DM))["text"]
    await world.deliver(emu.message_event(text="fresh start", channel=DM))
    answers = await world.answered(DM, None, count=2)
    assert answers[-1].text == said("fresh start", 1)


async def test_long_answer_is_split_into_thread_replies(world: World) -> None:
    mention = world.emu.mention_event(text="tell me everything !long=9000", channel=C)
    await world.deliver(mention)
    answers = await world.answered(C, mention["ts"])
    assert len(answers) >= 3
    assert all(len(a.text) <= 3_900 for a in answers)
    assert sum(len(a.text) for a in answers) >= 8_500
    assert not any(a.streaming for a in answers)


async def test_tool_call_end_to_end(world: World) -> None:
    mention = world.emu.mention_event(text="what's the weather in Lisbon?", channel=C)
    await world.deliver(mention)
    [answer] = await world.answered(C, mention["ts"])
    assert answer.text.startswith("[emulator] The tool said: ") and "Lisbon" in answer.text
    [tool_request] = world.stack.weather.received
    key = f"slack:{world.emu.team_id}:{C}:{mention['ts']}"
    assert tool_request["context"] == {"platform": "slack", "workspace": world.emu.team_id, "channel": C,
                                       "user": "U0ALICE", "conversation": key}


async def test_rate_limited_update_waits_and_finishes_and_refused_streaming_falls_back(world: World) -> None:
    emu = world.emu
    emu.refuse_streaming_in = {"C"}
    emu.rate_limit("chat.update", retry_after_s=1)
    mention = emu.mention_event(text="slowly please !slow=0.5", channel=C)
    await world.deliver(mention)
    [answer] = await world.answered(C, mention["ts"])
    assert (answer.kind, answer.text) == ("post", said("slowly please"))
    assert emu.calls_to("chat.startStream")[0].error == "channel_type_not_supported"
    updates = emu.calls_to("chat.update")
    assert updates[0].error == "ratelimited" and updates[1].at - updates[0].at >= 1.0
    assert updates[-1].ok


async def test_store_unavailable_is_not_acknowledged(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailable("Redis unreachable: ConnectionError")

    monkeypatch.setattr(world.stack.runtime.gateway, "accept", down)
    delivery = await world.deliver(world.emu.mention_event(text="lost?", channel=C))
    assert delivery.status == 503


async def test_socket_mode_events_commands_and_retries(redis_server: RedisServer, redis_client: object) -> None:
    async with open_world(redis_server.url, socket_mode=True) as world:
        emu = world.emu
        assert world.adapter.routes() == []
        await wait_until(world.adapter.ready)
        payload = emu.event_callback(emu.mention_event(text="over the socket", channel=C))
        ack = await emu.socket_deliver(payload)
        retry = await emu.socket_deliver(payload, retry_attempt=1, retry_reason="timeout")
        assert ack is not None and retry is not None
        [answer] = await world.answered(C, payload["event"]["ts"])
        assert answer.text == said("over the socket")
        assert emu.calls_to("apps.connections.open")[0].token == emu.app_token
        command = await emu.socket_deliver(emu.slash_command(text="show", channel=C), kind="slash_commands")
        assert command is not None and command.payload["response_type"] == "ephemeral"
        await asyncio.sleep(0.3)
        assert len(emu.calls_to("chat.startStream")) == 1


async def test_socket_mode_does_not_ack_when_intake_fails(
        redis_server: RedisServer, redis_client: object, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_world(redis_server.url, socket_mode=True) as world:
        async def down(*_args: object, **_kwargs: object) -> None:
            raise StoreUnavailable("Redis unreachable: ConnectionError")

        monkeypatch.setattr(world.stack.runtime.gateway, "accept", down)
        payload = world.emu.event_callback(world.emu.mention_event(text="lost?", channel=C))
        assert await world.emu.socket_deliver(payload, timeout_s=1.0) is None


def test_settings_need_a_mode() -> None:
    from core.errors import ConfigError
    from core.gateway import Gateway

    settings = Settings(SLACK_BOT_TOKEN=SecretStr("xoxb-x"))
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET or SLACK_APP_TOKEN"):
        SlackAdapter(gateway=Gateway.__new__(Gateway), settings=settings)


async def test_check_reports_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    from bots.slack import check

    emu = SlackEmulator()
    await emu.start()
    try:
        good = Settings(SLACK_BOT_TOKEN=SecretStr(emu.bot_token), SLACK_APP_TOKEN=SecretStr(emu.app_token),
                        SLACK_API_URL=emu.base_url)
        assert await check(good) == []
        assert "team T0TEAM" in capsys.readouterr().out
        bad = good.model_copy(update={"slack_app_token": SecretStr("xapp-wrong")})
        assert await check(bad) == ["slack: SLACK_APP_TOKEN was refused by apps.connections.open (invalid_auth)"]
        bad = good.model_copy(update={"slack_bot_token": SecretStr("xoxb-wrong")})
        assert await check(bad) == ["slack: SLACK_BOT_TOKEN was refused by auth.test (invalid_auth)"]
    finally:
        await emu.stop()


async def test_oversized_message_is_refused_in_the_thread_and_nothing_runs(
        redis_server: RedisServer, redis_client: object) -> None:
    async with open_world(redis_server.url, extra_config={"gateway": {"max_message_chars": 100}}) as world:
        mention = world.emu.mention_event(text="x" * 150, channel=C)
        assert (await world.deliver(mention)).status == 200
        await wait_until(lambda: bool(world.emu.bot_messages(C)))
        [notice] = world.emu.bot_messages(C)
        assert notice.thread_ts == mention["ts"] and "too long" in notice.text
        await asyncio.sleep(0.3)
        assert world.emu.methods() == ["auth.test", "chat.postMessage"]
        assert world.stack.emulator.state.threads == {}
