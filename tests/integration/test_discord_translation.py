"""Pure parts of the Discord adapter: conversation keys, places, mentions, thread names, reply targets, markup."""

from __future__ import annotations

import pytest

from bots.discord import INVITE_PERMISSIONS, invite_url
from bots.discord.markup import to_discord
from bots.discord.origin import (
    Origin,
    ReplyTarget,
    conversation_key,
    opener_text,
    place_of,
    strip_bot_mention,
    thread_name,
)

GUILD, CHANNEL, THREAD, USER, BOT = 10, 20, 30, 40, 99


@pytest.mark.parametrize(("origin", "scope", "key"), [
    (Origin(channel_id=CHANNEL, user_id=USER, guild_id=GUILD), "channel", "discord:10:20"),
    (Origin(channel_id=CHANNEL, user_id=USER, guild_id=GUILD), "user", "discord:10:20:40"),
    (Origin(channel_id=THREAD, user_id=USER, guild_id=GUILD, parent_id=CHANNEL, bot_thread=True), "user",
     "discord:10:30"),
    (Origin(channel_id=THREAD, user_id=USER, guild_id=GUILD, parent_id=CHANNEL), "user", "discord:10:30:40"),
    (Origin(channel_id=CHANNEL, user_id=USER), "user", "discord:dm:20"),
])
def test_conversation_keys(origin: Origin, scope: str, key: str) -> None:
    assert conversation_key(origin, scope=scope) == key  # type: ignore[arg-type]


def test_a_thread_is_placed_in_its_parent_channel_for_bindings() -> None:
    place = place_of(Origin(channel_id=THREAD, user_id=USER, guild_id=GUILD, parent_id=CHANNEL, bot_thread=True))
    assert (place.platform, place.workspace, place.channel, place.user, place.is_dm) == \
        ("discord", "10", "20", "40", False)
    dm = place_of(Origin(channel_id=CHANNEL, user_id=USER))
    assert (dm.workspace, dm.channel, dm.is_dm) == ("", "20", True)


def test_only_the_bots_own_mentions_are_stripped() -> None:
    assert strip_bot_mention(f"<@{BOT}> hello <@!{BOT}> and <@123>", BOT) == "hello   and <@123>"
    assert strip_bot_mention(f"  <@{BOT}>  ", BOT) == ""


@pytest.mark.parametrize(("prompt", "name"), [
    ("What is **up**?\n\nSecond line", "What is up? Second line"),
    ("<@42> `code` and # heading", "code and heading"),
    ("   ", "Conversation"),
])
def test_thread_names(prompt: str, name: str) -> None:
    assert thread_name(prompt) == name


def test_long_thread_names_end_at_a_word_within_discords_limit() -> None:
    name = thread_name("word " * 60)
    assert len(name) <= 100 and name.endswith("word…")


def test_opener_quotes_the_prompt_and_says_how_to_go_on() -> None:
    text = opener_text(user_id=USER, prompt="line one\nline two", bot_id=BOT, mention_needed=False)
    assert text == "<@40> asked:\n> line one\n> line two\n-# Write in this thread to continue the conversation."
    needed = opener_text(user_id=USER, prompt="x" * 5000, bot_id=BOT, mention_needed=True)
    assert len(needed) <= 2000 and needed.endswith(f"Mention <@{BOT}> in this thread to continue the conversation.")


def test_reply_targets_round_trip_as_plain_strings() -> None:
    targets = [
        ReplyTarget(channel_id=CHANNEL),
        ReplyTarget(channel_id=CHANNEL, reference_id=555),
        ReplyTarget(channel_id=CHANNEL, application_id=BOT, token="tok", token_expires_at=1234.5, original_used=True),
    ]
    for target in targets:
        data = target.to_reply_to()
        assert all(isinstance(v, str) for v in data.values())
        assert ReplyTarget.from_reply_to(data) == target
    assert ReplyTarget(channel_id=1, application_id=2, token="t", token_expires_at=100.0).token_left_s(now=40) == 60
    assert ReplyTarget(channel_id=1).token_left_s() == 0


def test_markup_turns_deep_headings_bold_outside_code() -> None:
    text = "# Title\n#### Deep ##\n```\n#### not a heading\n```\n###### six"
    assert to_discord(text) == "# Title\n**Deep**\n```\n#### not a heading\n```\n**six**"


def test_invite_url_asks_for_bot_and_commands_with_the_needed_permissions() -> None:
    url = invite_url(1234)
    assert "client_id=1234" in url and "scope=bot+applications.commands" in url
    assert f"permissions={INVITE_PERMISSIONS.value}" in url
    perms = INVITE_PERMISSIONS
    assert perms.send_messages and perms.send_messages_in_threads and perms.create_public_threads
    assert perms.read_message_history and perms.add_reactions and not perms.administrator
