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
"""

from __future__ import annotations

import asyncio
import logging
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

_FAILURES = (discord.HTTPException, *NETWORK_ERRORS)
ClientSource = Callable[[], discord.Client]


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
                           message_id=message.id)


async def _close_original(hook: InteractionWebhook, message_id: str) -> None:
    """The token will not outlive the run: end the "thinking…" response now rather than leave it hanging."""
    try:
        await hook.edit_original(ANSWER_BELOW)
    except _FAILURES as exc:
        log.info("deferred response not closed", extra={"event": "discord_original_unclosed",
                                                        "message_id": message_id, **describe(exc)})


class DiscordSink:
    limit_chars = LIMIT_CHARS
    min_edit_interval_s = MIN_EDIT_INTERVAL_S

    def __init__(self, client: discord.Client, target: ReplyTarget, *, hook: InteractionWebhook | None,
                 original_free: bool, message_id: str, typing_interval_s: float = TYPING_INTERVAL_S) -> None:
        self._client = client
        self._target = target
        self._hook = hook
        self._original_free = original_free
        self._message_id = message_id
        self._typing_interval_s = typing_interval_s
        self._typing: asyncio.Task[None] | None = None
        self._referenced = target.reference_id is None
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

    async def post(self, text: str) -> str:
        content = to_discord(text)
        if self._hook is not None:
            try:
                return await self._post_interaction(self._hook, content)
            except _FAILURES as exc:
                log.warning("interaction response failed; answering in the channel",
                            extra=self._log_fields(event="discord_interaction_fallback", **describe(exc)))
                self._hook = None
        return await self._post_channel(content)

    async def _post_interaction(self, hook: InteractionWebhook, content: str) -> str:
        if self._original_free:
            await hook.edit_original(content)
            self._original_free = False
            return "original"
        return f"followup:{await hook.send(content)}"

    async def _post_channel(self, content: str) -> str:
        options: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
        if not self._referenced and self._target.reference_id is not None:
            options["reference"] = discord.MessageReference(
                message_id=self._target.reference_id, channel_id=self._target.channel_id, fail_if_not_exists=False)
        try:
            sent = await self._channel.send(content, **options)
        except _FAILURES as exc:
            return self._lost("answer could not be posted", exc)
        self._referenced = True
        return f"message:{sent.id}"

    def _lost(self, what: str, exc: BaseException) -> str:
        reference = new_reference()
        log.error(what, extra=self._log_fields(event="discord_delivery_failed", reference=reference,
                                               **describe(exc)))
        return f"lost:{reference}"

    # --- editing ------------------------------------------------------------------------------

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        current = self._replaced.get(ref, ref)
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
            self._replaced[ref] = await self._post_channel(content)
        elif place_gone(exc):
            self._replaced[ref] = self._lost("answer could not be edited", exc)
        elif final:
            await asyncio.sleep(FINAL_RETRY_DELAY_S)
            try:
                await self._edit(current, content)
            except _FAILURES as again:
                self._replaced[ref] = self._lost("final text could not be written", again)
        else:
            # The next edit carries the whole text again; skipping this one loses nothing.
            log.info("edit skipped", extra={"event": "discord_edit_skipped", **fields})
