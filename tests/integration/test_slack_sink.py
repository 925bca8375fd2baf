"""The Slack reply sink through the real slack-sdk client against the local Slack emulator.

Each test drives the sink the way core's ReplyWriter does (working → post → edits → final edit →
done) and asserts on what the emulator holds: the messages a person would see, and the calls made.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bots.slack import sink as sink_module
from bots.slack.events import reply_to
from bots.slack.sink import SlackReplySink, SlackSinkFactory
from core.models import InboundMessage, Place
from tests.emulators.slack import SlackEmulator

THREAD = "1700000000.000100"




def message(channel: str = "C1", thread_ts: str | None = THREAD, message_ts: str = THREAD) -> InboundMessage:
    dm = channel.startswith("D")
    return InboundMessage(
        event_id=f"T:{channel}:{message_ts}", conversation=f"slack:T:{channel}:{thread_ts}",
        place=Place(platform="slack", workspace="T0TEAM", channel=channel, user="U0ALICE", is_dm=dm), text="hi",
        reply_to=reply_to(team="T0TEAM", channel=channel, thread_ts=thread_ts, message_ts=message_ts,
                          user="U0ALICE", is_dm=dm))


async def open_sink(factory: SlackSinkFactory, **kwargs: str | None) -> SlackReplySink:
    return await factory.open(message=message(**kwargs), existing_refs={})  # type: ignore[arg-type]


async def write(sink: SlackReplySink, *texts: str) -> str:
    """working, post the first text, edit with the others (the last one final), done."""
    await sink.working()
    ref = await sink.post(texts[0], part=0)
    for i, text in enumerate(texts[1:], start=2):
        await sink.edit(ref, text, final=i == len(texts))
    await sink.done()
    return ref


async def test_streams_into_the_thread_with_status(emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    ref = await write(await open_sink(factory), "Hel", "Hello *wor", "Hello *world*")
    # No setStatus("") at the end: Slack cleared the status when the answer was posted.
    assert emu.methods() == ["assistant.threads.setStatus", "chat.startStream", "chat.appendStream",
                             "chat.stopStream"]
    [answer] = emu.bot_messages("C1", THREAD)
    assert (answer.ts, answer.kind, answer.text, answer.streaming) == (ref, "stream", "Hello *world*", False)
    start = emu.calls_to("chat.startStream")[0].args
    assert (start["recipient_team_id"], start["recipient_user_id"]) == ("T0TEAM", "U0ALICE")
    assert [c.args["markdown_text"] for c in emu.calls_to("chat.appendStream", "chat.stopStream")] == ["lo *wor", "ld*"]
    assert emu.statuses == [("C1", THREAD, "is thinking…")]
    assert emu.status_shown("C1", THREAD) == ""


async def test_status_shows_until_the_answer_is_posted(emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    emu.refuse_streaming_in = {"C"}
    sink = await open_sink(factory)
    await sink.working()
    await asyncio.gather(*factory.indicators)
    assert emu.status_shown("C1", THREAD) == "is thinking…"
    await sink.post("posted", part=0)
    assert emu.status_shown("C1", THREAD) == ""
    await sink.done()
    assert [s for *_, s in emu.statuses] == ["is thinking…"]


async def test_status_is_cleared_by_done_when_nothing_was_posted(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    ref = await (await open_sink(factory)).post("before the crash", part=0)
    resumed = await factory.open(message=message(), existing_refs={"0": ref})
    await resumed.working()
    await resumed.edit(ref, "before the crash, and after", final=True)  # edits only: no reply cleared it
    await resumed.done()
    assert emu.methods()[-1] == "assistant.threads.setStatus"
    assert emu.statuses == [("C1", THREAD, "is thinking…"), ("C1", THREAD, "")]
    assert emu.status_shown("C1", THREAD) == ""


async def test_refused_streaming_falls_back_to_post_and_update_and_is_remembered(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    emu.refuse_streaming_in = {"C"}
    await write(await open_sink(factory), "one", "one two", "one two three")
    await write(await open_sink(factory, thread_ts="1700000000.000200"), "again", "again!")
    methods = [m for m in emu.methods() if m != "assistant.threads.setStatus"]
    assert methods == ["chat.startStream", "chat.postMessage", "chat.update", "chat.update",
                       "chat.postMessage", "chat.update"]
    [first] = emu.bot_messages("C1", THREAD)
    assert (first.kind, first.text, first.edits) == ("post", "one two three", ["one", "one two", "one two three"])


async def test_expired_stream_continues_with_updates(emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    sink = await open_sink(factory)
    ref = await sink.post("part one", part=0)
    emu.expire_stream(ref)
    await sink.edit(ref, "part one, part two", final=False)
    await sink.edit(ref, "part one, part two, end", final=True)
    await sink.done()
    assert emu.methods() == ["chat.startStream", "chat.appendStream", "chat.update", "chat.update"]
    [answer] = emu.bot_messages("C1", THREAD)
    assert answer.text == "part one, part two, end"
    assert emu.calls_to("chat.appendStream")[0].error == "message_not_in_streaming_state"


async def test_old_stream_is_stopped_before_slack_ends_it(
        emu: SlackEmulator, factory: SlackSinkFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_module, "STREAM_MAX_AGE_S", 0.0)
    sink = await open_sink(factory)
    ref = await sink.post("early", part=0)
    await sink.edit(ref, "early and late", final=True)
    assert [c.method for c in emu.calls_to("chat.stopStream", "chat.update", "chat.appendStream")] == [
        "chat.stopStream", "chat.update"]
    assert emu.messages[ref].text == "early and late"


async def test_rate_limited_update_waits_retry_after_and_finishes(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    emu.refuse_streaming_in = {"C"}
    sink = await open_sink(factory)
    ref = await sink.post("first", part=0)
    emu.rate_limit("chat.update", retry_after_s=1)
    started = time.monotonic()
    await sink.edit(ref, "first and final", final=True)
    assert time.monotonic() - started >= 1.0
    updates = emu.calls_to("chat.update")
    assert [(c.ok, c.error) for c in updates] == [(False, "ratelimited"), (True, None)]
    assert emu.messages[ref].text == "first and final"


async def test_msg_too_long_resplits_the_part_into_thread_replies(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    emu.max_text_chars = 1_000
    sink = await open_sink(factory, channel="D7", thread_ts=None, message_ts="1700000000.000300")
    paragraphs = [f"Paragraph {i}: " + "word " * 60 for i in range(12)]
    ref = await sink.post("\n\n".join(paragraphs[:5]), part=0)
    await sink.edit(ref, "\n\n".join(paragraphs), final=True)
    await sink.done()
    shown = emu.bot_messages("D7")
    assert shown[0].ts == ref and len(shown) >= 3
    assert all(len(m.text) <= 1_000 for m in shown)
    assert " ".join(" ".join(m.text.split()) for m in shown) == " ".join(" ".join(paragraphs).split())
    assert all(m.thread_ts is None for m in shown)


async def test_not_in_channel_is_logged_with_a_reference_and_does_not_raise(
        emu: SlackEmulator, factory: SlackSinkFactory, caplog: pytest.LogCaptureFixture) -> None:
    emu.not_in_channel.add("C1")
    sink = await open_sink(factory)
    with caplog.at_level(logging.WARNING, logger="bots.slack.sink"):
        ref = await write(sink, "hello", "hello there")
    assert ref.startswith("undelivered:SB-")
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "slack_undeliverable"]
    assert record.reference == ref.removeprefix("undelivered:")  # type: ignore[attr-defined]
    assert record.error == "not_in_channel"  # type: ignore[attr-defined]
    assert emu.messages == {}


async def test_reaction_when_status_is_refused_removed_at_done(
        emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    emu.set_status_error = "missing_scope"
    await write(await open_sink(factory, message_ts="1700000000.000150"), "a", "ab")
    assert emu.calls_to("reactions.add")[0].args == {
        "channel": "C1", "timestamp": "1700000000.000150", "name": "hourglass_flowing_sand"}
    assert len(emu.calls_to("reactions.remove")) == 1
    assert emu.reactions[("C1", "1700000000.000150")] == []
    await write(await open_sink(factory), "b", "bc")  # refusal is remembered: no second setStatus
    assert len(emu.calls_to("assistant.threads.setStatus")) == 1


async def test_top_level_dm_posts_without_thread_and_reacts(emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    await write(await open_sink(factory, channel="D7", thread_ts=None, message_ts="1700000000.000400"),
                "dm answer", "dm answer, done")
    assert emu.methods() == ["reactions.add", "chat.postMessage", "chat.update", "reactions.remove"]
    assert "thread_ts" not in emu.calls_to("chat.postMessage")[0].args
    assert emu.thread_text("D7", None) == "dm answer, done"


async def test_recovered_part_stream_is_closed_then_edited(emu: SlackEmulator, factory: SlackSinkFactory) -> None:
    crashed = await open_sink(factory)
    ref = await crashed.post("before the crash", part=0)
    resumed = await factory.open(message=message(), existing_refs={"0": ref})
    await resumed.edit(ref, "before the crash, and after", final=True)
    assert [c.method for c in emu.calls][-2:] == ["chat.stopStream", "chat.update"]
    assert emu.messages[ref].text == "before the crash, and after"


async def test_channel_lost_mid_answer_stops_writing_without_raising(
        emu: SlackEmulator, factory: SlackSinkFactory, caplog: pytest.LogCaptureFixture) -> None:
    emu.refuse_streaming_in = {"C"}
    sink = await open_sink(factory)
    ref = await sink.post("started", part=0)
    emu.not_in_channel.add("C1")  # the bot was removed from the channel meanwhile
    with caplog.at_level(logging.WARNING, logger="bots.slack.sink"):
        await sink.edit(ref, "started, more", final=False)
        await sink.edit(ref, "started, more, end", final=True)
        await sink.done()
    assert len(emu.calls_to("chat.update")) == 1
    assert [getattr(r, "error", None) for r in caplog.records if getattr(r, "event", "") == "slack_undeliverable"] \
        == ["not_in_channel"]
    assert emu.messages[ref].text == "started"
