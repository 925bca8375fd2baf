"""Finding the Slack messages an interrupted attempt posted but never recorded (``FindsPostedParts``).

The sink tests drive the real Slack sink and core's ``ReplyWriter`` through the real slack-sdk
client against the local Slack emulator: an attempt posts, dies before its post is recorded, and
the next attempt asks ``posted_parts`` before writing. The last test does the same through the
engine: a process killed between Slack's answer to its post and the record, another one finishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from bots.slack.events import BotIdentity, translate
from bots.slack.parts import tag
from bots.slack.sink import SlackReplySink, SlackSinkFactory
from core import recovery
from core.demo_tool import DemoToolServer
from core.emulator.assistants import AssistantsEmulator
from core.models import InboundMessage
from core.ports import FindsPostedParts
from core.reply import ReplyWriter
from core.runtime import Runtime, open_runtime
from core.settings import Settings
from tests.conftest import RedisServer
from tests.emulators.slack import SlackEmulator
from tests.integration.harness import ToolEndpoints, stack_config, working

C = "C1"


class Killed(BaseException):
    """The process died here (nothing after this line of the attempt happens)."""


def person_says(emu: SlackEmulator, text: str, *, channel: str = C, thread_ts: str | None = None) -> InboundMessage:
    """A message as the adapter accepts it: an @mention (starting a thread), or a reply / DM."""
    if thread_ts is None and not channel.startswith("D"):
        event = emu.mention_event(text=text, channel=channel)
    else:
        event = emu.message_event(text=text, channel=channel, thread_ts=thread_ts)
    me = BotIdentity(team_id=emu.team_id, user_id=emu.bot_user_id, bot_id=emu.bot_id)
    candidate = translate(emu.event_callback(event), me=me, answer_bots=False)
    assert candidate is not None
    return candidate.message


async def until(predicate: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def first_attempt(factory: SlackSinkFactory, message: InboundMessage, text: str) -> None:
    """A first attempt that runs to its end (nothing to find: the engine does not ask)."""
    writer = ReplyWriter(await factory.open(message=message, existing_refs={}))
    await writer.start()
    await writer.append(text)
    await writer.finish()


async def resume(factory: SlackSinkFactory, message: InboundMessage, text: str,
                 recorded: Mapping[int, str] | None = None) -> dict[int, str]:
    """The next attempt, as the engine runs it: find, adopt (recorded refs win), write the whole answer."""
    sink = await factory.open(message=message, existing_refs={str(i): ref for i, ref in (recorded or {}).items()})
    assert isinstance(sink, FindsPostedParts)
    refs = {**await sink.posted_parts(), **(recorded or {})}
    writer = ReplyWriter(sink, existing_refs=refs)
    await writer.start()
    await writer.append(text)
    await writer.finish()
    return writer.refs


async def test_a_stream_started_and_never_recorded_is_claimed_and_finished(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    message = person_says(emu, "tell me")
    stray = await (await factory.open(message=message, existing_refs={})).post("The answer beg", part=0)
    assert emu.messages[stray].streaming and emu.messages[stray].metadata is None  # startStream takes none
    answer = "The answer begins here and ends there."
    refs = await resume(factory, message, answer)
    assert refs == {0: stray}
    [shown] = emu.bot_messages(C, message.reply_to["thread_ts"])
    assert (shown.ts, shown.text, shown.streaming) == (stray, answer, False)
    assert shown.metadata == tag(message.id, 0)
    assert emu.calls_to("conversations.replies")[0].args["include_all_metadata"] in ("1", "true", True)


async def test_the_unrecorded_second_part_of_a_long_answer_is_found_after_the_first(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    message = person_says(emu, "a long one, please")
    answer = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(8))  # two parts of ~3900 chars
    recorded: dict[int, str] = {}

    async def on_posted(index: int, ref: str) -> None:
        if index == 1:
            raise Killed  # Slack took part 1; the process died before recording it
        recorded[index] = ref

    crashed = ReplyWriter(await factory.open(message=message, existing_refs={}), on_posted=on_posted)
    with pytest.raises(Killed):
        await crashed.append(answer)
    assert len(emu.bot_messages(C)) == 2 and set(recorded) == {0}
    refs = await resume(factory, message, answer, recorded)
    shown = emu.bot_messages(C, message.reply_to["thread_ts"])
    assert [m.ts for m in shown] == [refs[0], refs[1]] and refs[0] == recorded[0]
    assert " ".join(" ".join(m.text for m in shown).split()) == " ".join(answer.split())
    assert [m.metadata for m in shown] == [tag(message.id, 0), tag(message.id, 1)]
    assert not any(m.streaming for m in shown)


async def test_a_posted_part_and_its_resplit_continuations_are_found_in_a_dm(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    emu.max_text_chars = 1_000  # Slack refuses what core thinks fits: the sink re-splits the part
    message = person_says(emu, "a long one in a DM", channel="D7")
    paragraphs = [f"Paragraph {i}: " + "word " * 60 for i in range(10)]
    crashed = await factory.open(message=message, existing_refs={})
    first = await crashed.post("\n\n".join(paragraphs[:6]), part=0)  # part 0, and continuations of it
    before = emu.bot_messages("D7")
    assert len(before) >= 2 and all(m.metadata["event_payload"]["part"] == 0 for m in before)
    assert [m.metadata["event_payload"]["piece"] for m in before] == list(range(len(before)))
    answer = "\n\n".join(paragraphs)
    assert await resume(factory, message, answer) == {0: first}
    shown = emu.bot_messages("D7")
    assert [m.ts for m in shown[:len(before)]] == [m.ts for m in before]  # continued, not posted again
    assert " ".join(" ".join(m.text for m in shown).split()) == " ".join(answer.split())
    assert all(m.thread_ts is None for m in shown)
    assert emu.calls_to("conversations.history") and not emu.calls_to("conversations.replies")


async def test_an_earlier_answer_and_other_messages_of_ours_are_never_adopted(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    emu.history_page_size = 2  # several pages: the cursor is followed
    first = person_says(emu, "first question")
    thread_ts = first.reply_to["thread_ts"]
    second = person_says(emu, "second question", thread_ts=thread_ts)  # sent while the first is answered
    sdk = factory.client
    # The first answer's leftovers: an untagged stream its recovery never found, then its answer.
    old_stray = (await sdk.chat_startStream(channel=C, thread_ts=thread_ts, markdown_text="First ans",
                                            recipient_team_id="T0TEAM", recipient_user_id="U0ALICE"))["ts"]
    await first_attempt(factory, first, "First answer, in full.")
    # An untagged message of ours after it (a notice to someone): not a stream, so never claimed.
    notice = (await sdk.chat_postMessage(channel=C, thread_ts=thread_ts, markdown_text="Too long, sorry."))["ts"]
    sink = await factory.open(message=second, existing_refs={})
    assert await sink.posted_parts() == {}  # the second answer's attempt died before posting anything
    assert len(emu.calls_to("conversations.replies")) > 1
    assert emu.messages[old_stray].streaming and emu.messages[notice].text == "Too long, sorry."
    await resume(factory, second, "Second answer.")
    texts = [m.text for m in emu.bot_messages(C, thread_ts)]
    assert texts == ["First ans", "First answer, in full.", "Too long, sorry.", "Second answer."]


async def test_an_attempt_that_posted_nothing_finds_nothing(
        emu: SlackEmulator, factory: SlackSinkFactory, caplog: pytest.LogCaptureFixture) -> None:
    message = person_says(emu, "tell me")
    with caplog.at_level(logging.INFO, logger="bots.slack"):
        assert await (await factory.open(message=message, existing_refs={})).posted_parts() == {}
    assert not [r for r in caplog.records if getattr(r, "event", "").startswith("slack_")]
    [call] = emu.calls_to("conversations.replies")
    assert call.ok and call.args["oldest"] == message.reply_to["message_ts"]


async def test_history_that_cannot_be_read_leaves_the_answer_as_before(
        emu: SlackEmulator, factory: SlackSinkFactory, caplog: pytest.LogCaptureFixture) -> None:
    message = person_says(emu, "tell me")
    stray = await (await factory.open(message=message, existing_refs={})).post("The ans", part=0)
    emu.fail_next("conversations.replies", "internal_error")
    with caplog.at_level(logging.WARNING, logger="bots.slack.sink"):
        refs = await resume(factory, message, "The answer.")
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "slack_find_parts_failed"]
    assert record.reference.startswith("SB-") and record.error == "internal_error"  # type: ignore[attr-defined]
    assert refs[0] != stray  # posted again, as without FindsPostedParts
    assert [m.text for m in emu.bot_messages(C)] == ["The ans", "The answer."]


async def test_a_rate_limited_history_read_is_waited_out(emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    message = person_says(emu, "tell me")
    stray = await (await factory.open(message=message, existing_refs={})).post("The ans", part=0)
    emu.rate_limit("conversations.replies", retry_after_s=1)
    assert await resume(factory, message, "The answer.") == {0: stray}
    assert [m.text for m in emu.bot_messages(C)] == ["The answer."]


# --- through the engine -------------------------------------------------------------------------


@dataclass
class Proc:
    runtime: Runtime
    task: asyncio.Task[None]


class FreezingSinks:
    """Sinks of a process that freezes right after Slack answers its first post, before the post
    is recorded (and is then killed)."""

    def __init__(self, inner: SlackSinkFactory) -> None:
        self.inner = inner
        self.posted = asyncio.Event()

    async def open(self, *, message: InboundMessage, existing_refs: Mapping[str, str]) -> SlackReplySink:
        sink = await self.inner.open(message=message, existing_refs=existing_refs)
        post = sink.post

        async def frozen(text: str, *, part: int) -> str:
            ref = await post(text, part=part)
            self.posted.set()
            await asyncio.Event().wait()
            return ref

        sink.post = frozen  # type: ignore[method-assign]
        return sink


@pytest.fixture
async def backend() -> AsyncIterator[tuple[AssistantsEmulator, str, str]]:
    tools = ToolEndpoints()
    await tools.start()
    try:
        async with AssistantsEmulator(chunks=8) as emulator, DemoToolServer(secret="whsec_" + "x" * 32) as weather:
            yield emulator, weather.url, tools.base_url
    finally:
        await tools.stop()


@contextlib.asynccontextmanager
async def process(redis_url: str, backend: tuple[AssistantsEmulator, str, str], sinks: Any) -> AsyncIterator[Proc]:
    emulator, weather_url, tools_base = backend
    settings = Settings(OPENAI_BASE_URL=emulator.base_url, OPENAI_API_KEY=SecretStr("k"), REDIS_URL=redis_url)
    config = stack_config(weather_url=weather_url, tools_base=tools_base, extra={"gateway": {"lease_ttl_s": 2}})
    async with open_runtime(settings, config, redis_url=redis_url) as runtime:
        runtime.gateway.register_platform("slack", sinks)
        async with working(runtime) as task:
            yield Proc(runtime, task)


async def test_engine_adopts_the_stream_of_a_process_killed_before_recording_it(
        emu: SlackEmulator, factory: SlackSinkFactory, redis_server: RedisServer, redis_client: object,
        backend: tuple[AssistantsEmulator, str, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(recovery, "SETTLE_S", 0.1)  # a killed process waits for nothing
    message = person_says(emu, "say it once !slow=1")
    thread_ts = message.reply_to["thread_ts"]
    freezing = FreezingSinks(SlackSinkFactory(factory.client))
    async with process(redis_server.url, backend, freezing) as first:
        await first.runtime.gateway.accept(message)
        await asyncio.wait_for(freezing.posted.wait(), 10)
        [stray] = emu.bot_messages(C, thread_ts)
        assert stray.streaming and stray.metadata is None
        monkeypatch.setattr(first.runtime.worker, "_hand_back", lambda driver: asyncio.sleep(0))
        first.task.cancel()  # kill -9: nothing handed back, the lease left to expire
        with contextlib.suppress(asyncio.CancelledError):
            await first.task
    said = "[emulator] You said: say it once (message 1 in this thread)"
    with caplog.at_level(logging.INFO, logger="core.engine"):
        async with process(redis_server.url, backend, factory) as second:
            await until(lambda: emu.messages[stray.ts].text == said and not emu.messages[stray.ts].streaming,
                        timeout_s=15)
            store = second.runtime.store
            record = await store.redis.hgetall(store.keys.msg(message.conversation, message.id))
    assert [m.ts for m in emu.bot_messages(C, thread_ts)] == [stray.ts]  # one message: nothing stray is left
    assert json.loads(record["refs"]) == {"0": stray.ts}
    assert emu.messages[stray.ts].metadata == tag(message.id, 0)
    assert [r.parts for r in caplog.records if getattr(r, "event", "") == "parts_adopted"] == [[0]]  # type: ignore[attr-defined]
