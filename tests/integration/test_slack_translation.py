"""Slack event → InboundMessage translation (pure; payloads built by the emulator as Slack shapes them)."""

from __future__ import annotations

import pytest

from bots.slack.events import BotIdentity, command_place, strip_mention, translate
from core.tracing import parse_traceparent
from tests.emulators.slack import SlackEmulator

EMU = SlackEmulator()
ME = BotIdentity(team_id=EMU.team_id, user_id=EMU.bot_user_id, bot_id=EMU.bot_id)
T = EMU.team_id


def body(event: dict[str, object]) -> dict[str, object]:
    return EMU.event_callback(event)


def test_top_level_mention_starts_a_thread_keyed_by_its_ts() -> None:
    event = EMU.mention_event(text="what is up?", channel="C1", ts="100.000001")
    candidate = translate(body(event), me=ME, answer_bots=False)
    assert candidate is not None and not candidate.needs_existing_conversation
    message = candidate.message
    assert message.conversation == f"slack:{T}:C1:100.000001"
    assert message.text == "what is up?"
    assert message.event_id == f"{T}:C1:100.000001"
    assert message.place.model_dump() == {"platform": "slack", "workspace": T, "channel": "C1",
                                          "user": "U0ALICE", "is_dm": False}
    assert message.reply_to == {"team": T, "channel": "C1", "thread_ts": "100.000001",
                                "message_ts": "100.000001", "user": "U0ALICE", "dm": ""}
    assert parse_traceparent(message.traceparent) is not None


def test_mention_inside_a_thread_continues_that_thread() -> None:
    event = EMU.mention_event(text="and now?", channel="C1", ts="100.000009", thread_ts="100.000001")
    candidate = translate(body(event), me=ME, answer_bots=False)
    assert candidate is not None
    assert candidate.message.conversation == f"slack:{T}:C1:100.000001"
    assert candidate.message.reply_to["thread_ts"] == "100.000001"
    assert candidate.message.reply_to["message_ts"] == "100.000009"


def test_thread_message_without_mention_needs_an_existing_conversation() -> None:
    event = EMU.message_event(text="follow-up", channel="C1", ts="100.000005", thread_ts="100.000001")
    candidate = translate(body(event), me=ME, answer_bots=False)
    assert candidate is not None and candidate.needs_existing_conversation
    assert candidate.message.conversation == f"slack:{T}:C1:100.000001"


def test_mention_and_message_events_for_one_message_share_the_dedupe_id() -> None:
    mention = EMU.mention_event(text="hi", channel="C1", ts="100.000005", thread_ts="100.000001")
    plain = EMU.message_event(text=mention["text"], channel="C1", ts="100.000005", thread_ts="100.000001")
    a = translate(body(mention), me=ME, answer_bots=False)
    b = translate(body(plain), me=ME, answer_bots=False)
    assert a is not None and b is not None
    assert (a.message.event_id, a.message.conversation) == (b.message.event_id, b.message.conversation)


def test_channel_message_outside_a_thread_is_ignored() -> None:
    assert translate(body(EMU.message_event(text="chatter", channel="C1")), me=ME, answer_bots=False) is None


@pytest.mark.parametrize("thread_ts, key_suffix", [(None, ""), ("200.000001", ":200.000001")])
def test_dm_top_level_and_dm_thread(thread_ts: str | None, key_suffix: str) -> None:
    event = EMU.message_event(text="hello there", channel="D9", ts="200.000002", thread_ts=thread_ts)
    candidate = translate(body(event), me=ME, answer_bots=False)
    assert candidate is not None and not candidate.needs_existing_conversation
    assert candidate.message.conversation == f"slack:{T}:D9" + key_suffix
    assert candidate.message.place.is_dm
    assert candidate.message.reply_to["thread_ts"] == (thread_ts or "")
    assert candidate.message.reply_to["dm"] == "1"


@pytest.mark.parametrize("event", [
    EMU.message_event(text="mine", channel="D9", user=EMU.bot_user_id),
    EMU.message_event(text="mine", channel="D9", bot_id=EMU.bot_id, subtype="bot_message"),
    EMU.edit_event(channel="D9", ts="1.000001", new_text="edited"),
    EMU.message_event(text="", channel="D9", subtype="message_deleted"),
    EMU.message_event(text="joined", channel="C1", thread_ts="1.1", subtype="channel_join"),
    EMU.message_event(text="other bot", channel="D9", user="U0OTHER", bot_id="B0OTHER"),
    EMU.message_event(text="other bot", channel="D9", bot_id="B0OTHER", subtype="bot_message"),
], ids=["own-user", "own-bot", "edit", "delete", "join", "bot-with-user", "bot-message"])
def test_not_a_person_speaking_is_ignored(event: dict[str, object]) -> None:
    assert translate(body(event), me=ME, answer_bots=False) is None


def test_other_bots_are_answered_when_configured_but_never_ourselves() -> None:
    other = EMU.message_event(text="ping", channel="D9", bot_id="B0OTHER", subtype="bot_message")
    own = EMU.message_event(text="ping", channel="D9", bot_id=EMU.bot_id, subtype="bot_message")
    assert translate(body(other), me=ME, answer_bots=True) is not None
    assert translate(body(own), me=ME, answer_bots=True) is None


def test_file_share_and_broadcast_are_people_speaking() -> None:
    for subtype in ("file_share", "thread_broadcast"):
        event = EMU.message_event(text="look", channel="D9", subtype=subtype)
        assert translate(body(event), me=ME, answer_bots=False) is not None, subtype


def test_strip_mention_removes_only_our_mentions() -> None:
    text = f"<@{ME.user_id}> ask <@U0BOB> about <@{ME.user_id}|switchboard> it"
    assert strip_mention(text, ME.user_id) == "ask <@U0BOB> about it"


def test_command_place_in_channel_and_dm() -> None:
    place, key = command_place(EMU.slash_command(text="show", channel="C1"))
    assert (place.channel, place.is_dm, key) == ("C1", False, None)
    place, key = command_place(EMU.slash_command(text="reset", channel="D9"))
    assert (place.is_dm, key) == (True, f"slack:{T}:D9")
