"""Writing an answer on Discord: messages that grow by edits, typing while the assistant works.

Core's ``ReplyWriter`` decides what to write and when (throttled to ``min_edit_interval_s`` per
message, split at ``limit_chars``); this sink only makes the calls. Where it writes comes from
``InboundMessage.reply_to`` alone (a ``ReplyTarget``), so a worker in any process with a logged-in
client can write the answer.

- An interaction (``/ask`` answered in place) is answered in its deferred response, then in
  follow-ups — but only when its 15-minute token outlives the longest run; otherwise (the message
  waited in a queue) the deferred response is closed with a pointer and the answer goes to the
  channel.
- Everything else is channel messages, the first one replying to the person's message.

Refs: ``original``, ``followup:<id>``, ``message:<id>``, ``lost:<reference>``.

Discord errors never escape: an expired interaction token or a deleted message moves the answer to
a new channel message; a channel that is gone or closed to the bot is logged with a reference and
the answer is dropped there (there is nowhere left to show an error). Rate limits are discord.py's:
it waits ``retry_after`` and retries by itself.

Never the same part twice (``core.ports.FindsPostedParts``). A process can die between Discord
creating a message and core recording it; the next attempt (another process, one ``lease_ttl_s``
later) writes that part again. Parts are posted in order, each recorded before the next, so only
the part after the recorded ones can be unknown; this sink numbers its posts from there.

- Channel messages carry a ``nonce`` made from (core's message ID, part index, how many messages
  that part had before: a deleted one is replaced), so no two parts or answers share one, sent with
  ``enforce_nonce`` (discord.py 2.7 adds it to every nonce). Discord answers a create with a nonce
  the same author used within the past few minutes (it publishes no exact window) with the message
  it made then, and creates none. The next attempt writes the run's text so far as soon as it
  resumes, well inside that window; the returned message is then edited to that text. A nonce
  whose message was deleted meanwhile is refused (404 Unknown Message): the part is posted under
  the next nonce.
- ``posted_parts`` (asked after an interrupted attempt) reads the channel after the last recorded
  part with GET channel messages — Discord keeps no nonce on a message, so it cannot be searched
  for — and adopts the next part only where Discord shows for certain that it is this answer's:
  the bot's reply to the person's message (part 0 of an answer to a mention), the next follow-up
  of this interaction (``interaction_metadata.original_response_message_id``), or the bot's next
  plain message after a recorded part in a channel that holds one conversation (a DM, a thread, a
  channel with ``scope: channel``), where answers are written one at a time, in order, and the bot
  posts nothing else that replies to nothing (but the refusal of an ``/ask`` too late to defer).
  This is what covers an outage longer than Discord's nonce window. Elsewhere — part 0 where it
  replies to nothing (DMs, the bot's threads), a later part with ``scope: user``, where answers
  interleave — the nonce is the only guard: past its window the part is posted again.
- Interactions: the deferred response is written by editing it, which repeats harmlessly.
  Follow-ups are webhook messages, which take no nonce: they are found by ``posted_parts`` while
  the interaction's token (15 minutes) lets the answer edit them at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import discord

from bots.discord.markup import to_discord
from bots.discord.origin import ReplyTarget
from bots.discord.rest import NETWORK_ERRORS, InteractionWebhook, describe, message_gone, place_gone, token_gone
from core.logs import new_reference
from core.models import InboundMessage

log = logging.getLogger(__name__)

LIMIT_CHARS = 2000
MIN_EDIT_INTERVAL_S = 1.0
TYPING_INTERVAL_S = 8.0  # Discord shows "typing" for ~10 s per trigger
TOKEN_MARGIN_S = 30.0
FINAL_RETRY_DELAY_S = 1.0
ANSWER_BELOW = "The answer follows below."
NONCE_TRIES = 4  # a part's nonce, then the next ones while Discord says their messages were deleted
SCAN_LIMIT = 500  # messages read after the last recorded part when looking for the next one

_FAILURES = (discord.HTTPException, *NETWORK_ERRORS)
ClientSource = Callable[[], discord.Client]
Matcher = Callable[[discord.Message], str | None]


def part_nonce(message_id: str, index: int, generation: int) -> str:
    """The nonce of the ``generation``-th message of part ``index`` of the answer to ``message_id``: the same in
    every process, different for every part and answer; 24 characters (Discord allows 25)."""
    return hashlib.blake2b(f"{message_id}:{index}:{generation}".encode(), digest_size=12).hexdigest()


def holds_one_conversation(conversation: str, channel_id: int) -> bool:
    """Whether ``channel_id`` is all of ``conversation`` (keys from ``origin.conversation_key``): a DM, a thread,
    a channel with ``scope: channel`` — not one conversation per person (``scope: user``)."""
    return re.fullmatch(rf"discord:(?:dm|\d+):{channel_id}", conversation) is not None


class DiscordSinkFactory:
    """``ReplySinkFactory`` for Discord, on the client ``client()`` returns at the time of the call."""

    def __init__(self, client: ClientSource, *, run_timeout_s: float) -> None:
        self._client = client
        self._run_timeout_s = run_timeout_s

    async def open(self, *, message: InboundMessage, existing_refs: Mapping[str, str]) -> DiscordSink:
        target = ReplyTarget.from_reply_to(message.reply_to)
        client = self._client()
        hook = None
        if target.token is not None and target.application_id is not None:
            hook = InteractionWebhook(client.http, application_id=target.application_id, token=target.token)
        use_hook = hook is not None and target.token_left_s() > self._run_timeout_s + TOKEN_MARGIN_S
        original_free = not target.original_used and "original" not in existing_refs.values()
        if hook is not None and not use_hook and original_free and not existing_refs:
            await _close_original(hook, message.id)
        return DiscordSink(client, target, hook=hook if use_hook else None, original_free=original_free,
                           message_id=message.id, existing_refs=existing_refs,
                           one_conversation=holds_one_conversation(message.conversation, target.channel_id))


async def _close_original(hook: InteractionWebhook, message_id: str) -> None:
    """The token will not outlive the run: end the "thinking…" response now rather than leave it hanging."""
    try:
        await hook.edit_original(ANSWER_BELOW)
    except _FAILURES as exc:
        log.info("deferred response not closed", extra={"event": "discord_original_unclosed",
                                                        "message_id": message_id, **describe(exc)})


def _reply_to(person_message: int, me: int) -> Matcher:
    """The bot's channel message replying to ``person_message``: part 0 of the answer to it."""
    def match(message: discord.Message) -> str | None:
        replied = message.reference is not None and message.reference.message_id == person_message
        return f"message:{message.id}" if replied and _from_bot(message, me) else None
    return match


def _plain(me: int) -> Matcher:
    """The bot's channel message that replies to nothing (not a system message, not an interaction's)."""
    def match(message: discord.Message) -> str | None:
        plain = message.reference is None and message.type == discord.MessageType.default
        return f"message:{message.id}" if plain and _from_bot(message, me) else None
    return match


def _followup_of(original: int) -> Matcher:
    """A follow-up of the interaction whose deferred response is ``original``."""
    def match(message: discord.Message) -> str | None:
        meta = message.interaction_metadata
        return f"followup:{message.id}" if meta and meta.original_response_message_id == original else None
    return match


def _from_bot(message: discord.Message, me: int) -> bool:
    return message.author.id == me and message.webhook_id is None


def _message_id(ref: str) -> int | None:
    kind, _, ident = ref.partition(":")
    return int(ident) if kind in ("message", "followup") else None


class DiscordSink:
    limit_chars = LIMIT_CHARS
    min_edit_interval_s = MIN_EDIT_INTERVAL_S

    def __init__(self, client: discord.Client, target: ReplyTarget, *, hook: InteractionWebhook | None,
                 original_free: bool, message_id: str, typing_interval_s: float = TYPING_INTERVAL_S,
                 existing_refs: Mapping[str, str] | None = None, one_conversation: bool = False) -> None:
        """``existing_refs`` (part index -> ref) are the parts already recorded; ``one_conversation``: the
        channel holds only this answer's conversation (``holds_one_conversation``)."""
        self._client = client
        self._target = target
        self._hook = hook
        self._original_free = original_free
        self._message_id = message_id
        self._typing_interval_s = typing_interval_s
        self._one_conversation = one_conversation
        self._typing: asyncio.Task[None] | None = None
        self._parts = {int(index): ref for index, ref in (existing_refs or {}).items()}
        self._part_of = {ref: index for index, ref in self._parts.items()}  # every message ref -> its part
        self._generation: dict[int, int] = {}  # part -> the nonce generation of its latest message
        self._referenced = target.reference_id is None or any(r.startswith("message:") for r in self._parts.values())
        self._replaced: dict[str, str] = {}

    @property
    def _channel(self) -> discord.PartialMessageable:
        return self._client.get_partial_messageable(self._target.channel_id)

    def _log_fields(self, **extra: Any) -> dict[str, Any]:
        return {"message_id": self._message_id, "channel": str(self._target.channel_id), **extra}

    # --- working indicator --------------------------------------------------------------------

    async def working(self) -> None:
        if self._typing is None:
            self._typing = asyncio.create_task(self._keep_typing(), name=f"discord-typing-{self._message_id}")

    async def done(self) -> None:
        task, self._typing = self._typing, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _keep_typing(self) -> None:
        while True:
            try:
                await self._client.http.send_typing(self._target.channel_id)
            except _FAILURES as exc:
                log.info("typing indicator failed", extra=self._log_fields(event="discord_typing_failed",
                                                                          **describe(exc)))
                if place_gone(exc):
                    return
            await asyncio.sleep(self._typing_interval_s)

    # --- posting ------------------------------------------------------------------------------

    async def post(self, text: str, *, part: int) -> str:
        ref = await self._post(to_discord(text), part)
        self._parts[part], self._part_of[ref] = ref, part
        return ref

    async def _post(self, content: str, index: int) -> str:
        if self._hook is not None:
            try:
                return await self._post_interaction(self._hook, content)
            except _FAILURES as exc:
                log.warning("interaction response failed; answering in the channel",
                            extra=self._log_fields(event="discord_interaction_fallback", **describe(exc)))
                self._hook = None
        return await self._post_channel(content, index)

    async def _post_interaction(self, hook: InteractionWebhook, content: str) -> str:
        if self._original_free:
            await hook.edit_original(content)
            self._original_free = False
            return "original"
        return f"followup:{await hook.send(content)}"

    async def _post_channel(self, content: str, index: int, *, generation: int = 0) -> str:
        """A channel message for part ``index`` under its nonce (see the module docstring)."""
        options: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
        if not self._referenced and self._target.reference_id is not None:
            options["reference"] = discord.MessageReference(
                message_id=self._target.reference_id, channel_id=self._target.channel_id, fail_if_not_exists=False)
        for attempt in range(generation, generation + NONCE_TRIES):
            try:
                sent = await self._channel.send(content, nonce=part_nonce(self._message_id, index, attempt), **options)
            except _FAILURES as exc:
                if message_gone(exc) and attempt + 1 < generation + NONCE_TRIES:
                    continue  # this nonce's message was deleted since: Discord will not make it again
                return self._lost("answer could not be posted", exc)
            self._referenced = True
            self._generation[index] = attempt
            ref = f"message:{sent.id}"
            self._part_of[ref] = index
            if sent.content.strip() != content.strip():
                await self._catch_up(ref, content)
            return ref
        raise AssertionError("unreachable: the last try returns")

    async def _catch_up(self, ref: str, content: str) -> None:
        """Discord returned the message an interrupted attempt posted under this nonce: write today's text."""
        log.info("part found by its nonce; bringing it up to date", extra=self._log_fields(
            event="discord_part_reused", ref=ref))
        try:
            await self._edit(ref, content)
        except _FAILURES as exc:
            await self._edit_failed(ref, ref, content, final=True, exc=exc)

    def _lost(self, what: str, exc: BaseException) -> str:
        reference = new_reference()
        log.error(what, extra=self._log_fields(event="discord_delivery_failed", reference=reference,
                                               **describe(exc)))
        return f"lost:{reference}"

    # --- editing ------------------------------------------------------------------------------

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        current = ref
        while current in self._replaced:
            current = self._replaced[current]
        if current.startswith("lost:"):
            return
        content = to_discord(text)
        try:
            await self._edit(current, content)
        except _FAILURES as exc:
            await self._edit_failed(ref, current, content, final=final, exc=exc)

    async def _edit(self, ref: str, content: str) -> None:
        kind, _, ident = ref.partition(":")
        if kind == "message":
            await self._channel.get_partial_message(int(ident)).edit(
                content=content, allowed_mentions=discord.AllowedMentions.none())
            return
        hook = self._hook or self._any_hook()
        if kind == "original":
            await hook.edit_original(content)
        elif kind == "followup":
            await hook.edit(int(ident), content)
        else:
            raise ValueError(f"not a Discord message ref: {ref!r}")

    def _any_hook(self) -> InteractionWebhook:
        """The interaction's webhook even when too old for new posts: its messages may still be edited."""
        target = self._target
        if target.token is None or target.application_id is None:
            raise ValueError("this answer has no interaction")
        return InteractionWebhook(self._client.http, application_id=target.application_id, token=target.token)

    async def _edit_failed(self, ref: str, current: str, content: str, *, final: bool, exc: BaseException) -> None:
        fields = self._log_fields(ref=current, final=final, **describe(exc))
        if token_gone(exc) or message_gone(exc):
            log.warning("message can no longer be edited; continuing in a new one",
                        extra={"event": "discord_edit_moved", **fields})
            self._hook = None
            self._replaced[current] = await self._replacement(current, content)
        elif place_gone(exc):
            self._replaced[current] = self._lost("answer could not be edited", exc)
        elif final:
            await asyncio.sleep(FINAL_RETRY_DELAY_S)
            try:
                await self._edit(current, content)
            except _FAILURES as again:
                self._replaced[current] = self._lost("final text could not be written", again)
        else:
            # The next edit carries the whole text again; skipping this one loses nothing.
            log.info("edit skipped", extra={"event": "discord_edit_skipped", **fields})

    async def _replacement(self, ref: str, content: str) -> str:
        """A new channel message standing in for ``ref``, under the next nonce of its part."""
        index = self._part_of[ref]
        return await self._post_channel(content, index, generation=self._generation.get(index, 0) + 1)

    # --- recovery -----------------------------------------------------------------------------

    async def posted_parts(self) -> Mapping[int, str]:
        """``FindsPostedParts``: the part after the recorded ones, if an interrupted attempt posted it and
        Discord shows for certain that it belongs to this answer (module docstring); else nothing."""
        index = max(self._parts, default=-1) + 1  # parts are posted in order: only this one can be unrecorded
        try:
            ref = await self._find_part(index)
        except _FAILURES as exc:
            log.warning("could not look for parts already posted", extra=self._log_fields(
                event="discord_parts_unknown", **describe(exc)))
            return {}
        if ref is None:
            return {}
        self._parts[index], self._part_of[ref] = ref, index
        self._referenced = self._referenced or ref.startswith("message:")
        return {index: ref}

    async def _find_part(self, index: int) -> str | None:
        me = self._client.user
        target = self._target
        if me is None or (index == 0 and target.token is not None and self._original_free):
            return None  # part 0 is written by editing the deferred response: repeating that posts nothing
        original = await self._original_id() if target.token is not None else None
        matchers: list[Matcher] = [] if original is None else [_followup_of(original)]
        if index == 0:
            anchor = target.reference_id or original
            if target.reference_id is not None:
                matchers.append(_reply_to(target.reference_id, me.id))
        else:
            previous = self._parts.get(index - 1, "")
            anchor = original if previous == "original" else _message_id(previous)
            if self._one_conversation:
                matchers.append(_plain(me.id))
        if anchor is None or not matchers:
            return None
        async for message in self._channel.history(limit=SCAN_LIMIT, after=discord.Object(anchor), oldest_first=True):
            for match in matchers:
                if (ref := match(message)) is not None:
                    return ref
        return None

    async def _original_id(self) -> int | None:
        """The deferred response's message ID; None once the interaction's token is no longer valid."""
        try:
            return await self._any_hook().original_id()
        except discord.HTTPException as exc:
            if token_gone(exc):
                return None
            raise
