"""Writing one answer into a Slack thread or DM (core's ``ReplySink``).

Core's ``ReplyWriter`` decides what to write and when (throttling, splitting at ``limit_chars``,
error text); this sink only performs the Slack calls:

- **Streaming** (``chat.startStream`` / ``appendStream`` / ``stopStream``, Markdown in
  ``markdown_text``) where the place has a thread; Slack renders the Markdown itself.
- **Post + edit** (``chat.postMessage`` / ``chat.update`` with ``markdown_text``) where streaming
  is refused (remembered per channel), for top-level DM answers, after a stream ended (Slack
  ends streams ~5 minutes after they start; ours are stopped before that), and for recovered parts.
- **Working indicator**: ``assistant.threads.setStatus`` in threads, which Slack clears itself when
  the app replies in the thread (``done()`` clears it only when this attempt posted nothing there);
  where that is refused or there is no thread, a reaction on the person's message, removed by
  ``done()``. ``working()`` does not wait for Slack (the backend request goes out meanwhile instead
  of one Slack round trip later); every later call on the sink waits for the indicator first, so it
  still comes before the answer.
- **Recovery** (``core.ports.FindsPostedParts``): every message is tagged with Slack message metadata
  naming the answer and the part (``bots.slack.parts``), so ``posted_parts`` finds the messages an
  interrupted attempt posted but never recorded; a stream it started (untagged: ``chat.startStream``
  takes no metadata) is claimed by stopping it with the tag. The first edit of a part another
  attempt posted stops its stream if still open, then edits it (and the continuations found for it).
- **Slack errors**: ``ratelimited`` is waited out by the client's retry handler; ``msg_too_long``
  re-splits the part smaller and continues it in further thread replies; errors that make the
  place undeliverable (``not_in_channel``, ``channel_not_found``, …) are logged with a reference
  and the answer is dropped there instead of crashing; a failed intermediate edit is logged and
  skipped (the next one carries the whole text).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.client import STREAM_OVER, TRANSIENT, UNDELIVERABLE, error_code
from bots.slack.events import BotIdentity
from bots.slack.parts import find, tag
from core.logs import new_reference
from core.models import InboundMessage
from core.text import split_text

log = logging.getLogger(__name__)

LIMIT_CHARS = 3_900
MIN_EDIT_INTERVAL_S = 1.0
STREAM_MAX_AGE_S = 270.0
MIN_SPLIT_CHARS = 500
STATUS_TEXT = "is thinking…"
WORKING_REACTION = "hourglass_flowing_sand"
UNDELIVERED_PREFIX = "undelivered:"
FIND_TIMEOUT_S = 15.0
"""How long ``posted_parts`` may read the thread; past it the answer goes on as if nothing was found."""
_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True)
class Target:
    """Where an answer goes, read back from ``InboundMessage.reply_to`` (see ``events.reply_to``)."""

    team: str
    channel: str
    thread_ts: str | None
    message_ts: str
    user: str

    @classmethod
    def from_reply_to(cls, reply_to: Mapping[str, str]) -> Target:
        return cls(team=reply_to.get("team", ""), channel=reply_to["channel"],
                   thread_ts=reply_to.get("thread_ts") or None, message_ts=reply_to.get("message_ts", ""),
                   user=reply_to.get("user", ""))


@dataclass
class _Part:
    """One message of the answer as core sees it, and the continuation messages a re-split added."""

    ts: str
    shown: str | None
    index: int | None = None
    """Core's part index (None: a ref this sink cannot place; its messages then go untagged)."""
    streaming: bool = False
    started: float = 0.0
    limit: int | None = None
    overflow: list[tuple[str, str | None]] = field(default_factory=list)


class SlackSinkFactory:
    """Opens sinks on the process's Web API client; remembers where Slack refused streaming or status."""

    def __init__(self, client: AsyncWebClient, *, stream: bool = True, identity: BotIdentity | None = None) -> None:
        self.client = client
        self.stream = stream
        self.identity = identity
        self.no_stream_channels: set[str] = set()
        self.no_status_channels: set[str] = set()
        self.indicators: set[asyncio.Task[None]] = set()  # working indicators still being set

    async def aclose(self) -> None:
        """Stop indicators still being set (at shutdown, before the HTTP session closes)."""
        for task in self.indicators:
            task.cancel()
        await asyncio.gather(*self.indicators, return_exceptions=True)

    async def me(self) -> BotIdentity:
        """Who the bot is: as the adapter said, else asked of Slack (``auth.test``) once."""
        if self.identity is None:
            response = await self.client.auth_test()
            self.identity = BotIdentity(team_id=str(response.get("team_id") or ""),
                                        user_id=str(response.get("user_id") or ""), bot_id=response.get("bot_id"))
        return self.identity

    async def open(self, *, message: InboundMessage, existing_refs: Mapping[str, str]) -> SlackReplySink:
        # Parts in existing_refs need no set-up: the first edit of an unknown ref recovers it.
        return SlackReplySink(self, Target.from_reply_to(message.reply_to), message_id=message.id,
                              existing_refs={int(index): ref for index, ref in existing_refs.items()})


class SlackReplySink:
    limit_chars = LIMIT_CHARS
    min_edit_interval_s = MIN_EDIT_INTERVAL_S

    def __init__(self, factory: SlackSinkFactory, target: Target, *, message_id: str = "",
                 existing_refs: Mapping[int, str] | None = None) -> None:
        self._factory = factory
        self._client = factory.client
        self._target = target
        self._message_id = message_id
        self._refs: dict[int, str] = dict(existing_refs or {})  # part index -> ref, as core numbers parts
        self._pieces: dict[int, list[str]] = {}  # continuation messages found for a part (posted_parts)
        self._claimed: set[str] = set()  # streams posted_parts stopped: already tagged, no stop needed
        self._parts: dict[str, _Part] = {}
        self._undelivered: str | None = None
        self._status_set = False
        self._replied = False  # a message was posted into the place: Slack has cleared the status
        self._reacted = False
        self._indicator: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ working indicator

    async def working(self) -> None:
        """Start showing that the assistant is working; returns at once (see the module docstring)."""
        task = asyncio.create_task(self._show_working(), name="slack-working-indicator")
        self._factory.indicators.add(task)
        task.add_done_callback(self._factory.indicators.discard)
        self._indicator = task

    async def _indicated(self) -> None:
        """Wait until the indicator ``working()`` started is in place (or could not be shown)."""
        task, self._indicator = self._indicator, None
        if task is not None:
            await task

    async def _show_working(self) -> None:
        try:
            await self._set_status_or_react()
        except _NETWORK_ERRORS as exc:
            # Only cosmetic: the answer goes on (and fails there if Slack is really unreachable).
            log.warning("no working indicator", extra={"event": "slack_indicator_failed", "error": type(exc).__name__,
                                                       "channel": self._target.channel})

    async def _set_status_or_react(self) -> None:
        target = self._target
        if target.thread_ts and target.channel not in self._factory.no_status_channels:
            try:
                await self._client.assistant_threads_setStatus(
                    channel_id=target.channel, thread_ts=target.thread_ts, status=STATUS_TEXT)
                self._status_set = True
                return
            except SlackApiError as exc:
                code = error_code(exc)
                if code not in TRANSIENT:
                    self._factory.no_status_channels.add(target.channel)
                log.info("status refused; reacting instead", extra={"event": "slack_status_refused", "error": code,
                                                                     "channel": target.channel})
        await self._react()

    async def _react(self) -> None:
        try:
            await self._client.reactions_add(channel=self._target.channel, timestamp=self._target.message_ts,
                                             name=WORKING_REACTION)
            self._reacted = True
        except SlackApiError as exc:
            self._reacted = error_code(exc) == "already_reacted"
            log.warning("no working indicator", extra={"event": "slack_reaction_failed", "error": error_code(exc),
                                                       "channel": self._target.channel})

    async def done(self) -> None:
        """Close streams left open, then clear the status (unless a reply cleared it) or remove the
        reaction. Never raises for Slack."""
        await self._indicated()
        for part in self._parts.values():
            if part.streaming:
                await self._guarded("stop_stream", self._stop_stream(part))
        if self._status_set and not self._replied:
            await self._guarded("clear_status", self._client.assistant_threads_setStatus(
                channel_id=self._target.channel, thread_ts=self._target.thread_ts or "", status=""))
        if self._reacted:
            await self._guarded("remove_reaction", self._client.reactions_remove(
                channel=self._target.channel, timestamp=self._target.message_ts, name=WORKING_REACTION))

    async def _guarded(self, action: str, call: Awaitable[object]) -> None:
        try:
            await call
        except (SlackApiError, *_NETWORK_ERRORS) as exc:
            code = error_code(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("slack cleanup failed", extra={"event": "slack_cleanup_failed", "action": action,
                                                       "error": code, "channel": self._target.channel})

    # ------------------------------------------------------------------ writing

    async def post(self, text: str, *, part: int) -> str:
        """Start message ``part`` of the answer; returns its ``ts`` (or an ``undelivered:`` ref)."""
        await self._indicated()
        if self._undelivered is not None:
            return self._undelivered
        try:
            await self._close_earlier_streams()
            message = await self._start_stream(text, part) if self._can_stream() else None
            if message is None:
                message = await self._post_part(text, part)
        except SlackApiError as exc:
            return self._give_up(exc, "post")
        self._parts[message.ts] = message
        self._refs[part] = message.ts
        return message.ts

    def _tag(self, part: _Part, piece: int = 0) -> dict[str, Any] | None:
        return None if part.index is None else tag(self._message_id, part.index, piece)

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        """Make message ``ref`` show ``text`` (the whole part so far); ``final``: it is complete."""
        await self._indicated()
        if ref.startswith(UNDELIVERED_PREFIX) or self._undelivered is not None:
            return
        part = self._parts.get(ref) or await self._recover(ref)
        try:
            if part.streaming:
                await self._edit_stream(part, text, final=final)
            else:
                await self._write(part, text)
        except SlackApiError as exc:
            code = error_code(exc)
            if final or code not in TRANSIENT:
                self._give_up(exc, "edit")
            else:
                log.info("intermediate edit skipped", extra={"event": "slack_edit_skipped", "error": code})
        except _NETWORK_ERRORS as exc:
            if final:
                raise
            log.info("intermediate edit skipped", extra={"event": "slack_edit_skipped", "error": type(exc).__name__})

    def _give_up(self, exc: SlackApiError, action: str) -> str:
        """Undeliverable here: log with a reference and drop the answer; anything else propagates."""
        code = error_code(exc)
        if code not in UNDELIVERABLE:
            raise exc
        reference = new_reference()
        log.warning("answer cannot be delivered in this channel", extra={
            "event": "slack_undeliverable", "reference": reference, "error": code, "action": action,
            "channel": self._target.channel, "thread_ts": self._target.thread_ts})
        self._undelivered = UNDELIVERED_PREFIX + reference
        return self._undelivered

    async def _recover(self, ref: str) -> _Part:
        """A part another process (or attempt) posted: close its stream if one is open (tagging it),
        then edit it, with the continuation messages found for it."""
        index = next((i for i, known in self._refs.items() if known == ref), None)
        pieces = self._pieces.get(index, []) if index is not None else []
        part = _Part(ts=ref, shown=None, index=index, overflow=[(ts, None) for ts in pieces])
        self._parts[ref] = part
        if ref in self._claimed:
            return part
        try:
            await self._client.chat_stopStream(channel=self._target.channel, ts=ref, metadata=self._tag(part))
        except SlackApiError as exc:
            if error_code(exc) not in STREAM_OVER:
                log.info("recovered part", extra={"event": "slack_recover", "error": error_code(exc)})
        return part

    # ------------------------------------------------------------------ finding parts (recovery)

    async def posted_parts(self) -> Mapping[int, str]:
        """The parts of this answer already in Slack (``core.ports.FindsPostedParts``; see
        ``bots.slack.parts.find``). Slack trouble here is logged with a reference and only means
        that less is found (then a part may be posted again, as without this capability)."""
        target = self._target
        try:
            found = await find(self._client, channel=target.channel, thread_ts=target.thread_ts,
                               after_ts=target.message_ts, me=self._factory.me, message_id=self._message_id,
                               known=self._refs, read_timeout_s=FIND_TIMEOUT_S)
        except (SlackApiError, TimeoutError, *_NETWORK_ERRORS) as exc:
            code = error_code(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("could not look for parts an interrupted attempt posted", extra={
                "event": "slack_find_parts_failed", "reference": new_reference(), "error": code,
                "channel": target.channel, "thread_ts": target.thread_ts})
            return {}
        self._pieces, self._claimed = found.pieces, found.claimed
        self._refs = {**found.parts, **self._refs}  # recorded refs win
        return found.parts

    # ------------------------------------------------------------------ streaming

    async def _close_earlier_streams(self) -> None:
        """A new part means the earlier ones are final (core's contract): end their streams."""
        for part in self._parts.values():
            if part.streaming:
                await self._stop_stream(part)

    def _can_stream(self) -> bool:
        return (self._factory.stream and self._target.thread_ts is not None
                and self._target.channel not in self._factory.no_stream_channels)

    async def _start_stream(self, text: str, index: int) -> _Part | None:
        """A streamed message, or None where Slack refuses to stream (then remembered for the channel)."""
        target = self._target
        try:
            response = await self._client.chat_startStream(
                channel=target.channel, thread_ts=target.thread_ts or "", markdown_text=text or None,
                recipient_team_id=target.team or None, recipient_user_id=target.user or None)
        except SlackApiError as exc:
            code = error_code(exc)
            if code in UNDELIVERABLE or code in TRANSIENT:
                raise
            if code != "msg_too_long":
                self._factory.no_stream_channels.add(target.channel)
            log.info("streaming refused; posting instead", extra={"event": "slack_stream_refused", "error": code,
                                                                   "channel": target.channel})
            return None
        self._replied = True
        return _Part(ts=str(response["ts"]), shown=text, index=index, streaming=True, started=time.monotonic())

    async def _edit_stream(self, part: _Part, text: str, *, final: bool) -> None:
        fresh = time.monotonic() - part.started < STREAM_MAX_AGE_S
        if fresh and part.shown is not None and text.startswith(part.shown):
            delta = text[len(part.shown):]
            try:
                if final:
                    await self._stop_stream(part, delta)
                    part.shown = text
                elif delta:
                    await self._client.chat_appendStream(channel=self._target.channel, ts=part.ts, markdown_text=delta)
                    part.shown = text
                return
            except SlackApiError as exc:
                if error_code(exc) not in STREAM_OVER and error_code(exc) != "msg_too_long":
                    raise
                log.info("stream ended; editing instead", extra={"event": "slack_stream_over",
                                                                  "error": error_code(exc)})
                part.streaming = False
        else:
            await self._stop_stream(part)
        await self._write(part, text)

    async def _stop_stream(self, part: _Part, text: str = "") -> None:
        """Stop ``part``'s stream (appending ``text``); a stream Slack already ended is fine, not an error."""
        part.streaming = False
        try:
            await self._client.chat_stopStream(channel=self._target.channel, ts=part.ts, markdown_text=text or None,
                                               metadata=self._tag(part))
        except SlackApiError as exc:
            if error_code(exc) not in STREAM_OVER or text:
                raise

    # ------------------------------------------------------------------ post + update

    async def _post_part(self, text: str, index: int) -> _Part:
        limit: int | None = None
        while True:
            first = text if limit is None else split_text(text, limit)[0]
            try:
                ts = await self._post_message(first, tag(self._message_id, index))
                break
            except SlackApiError as exc:
                limit = self._smaller(limit, exc)
        part = _Part(ts=ts, shown=first, index=index, limit=limit)
        if limit is not None:
            await self._write(part, text)
        return part

    async def _write(self, part: _Part, text: str) -> None:
        """Show ``text`` in ``part`` (and its continuations, once ``msg_too_long`` taught us a limit)."""
        while True:
            pieces = [text] if part.limit is None else split_text(text, part.limit)
            try:
                await self._write_pieces(part, pieces)
                return
            except SlackApiError as exc:
                part.limit = self._smaller(part.limit, exc)

    async def _write_pieces(self, part: _Part, pieces: list[str]) -> None:
        if pieces[0] != part.shown:
            await self._update(part.ts, pieces[0], self._tag(part))
            part.shown = pieces[0]
        for i, piece in enumerate(pieces[1:]):
            if i < len(part.overflow):
                ts, shown = part.overflow[i]
                if shown != piece:
                    await self._update(ts, piece, self._tag(part, i + 1))
                    part.overflow[i] = (ts, piece)
            else:
                part.overflow.append((await self._post_message(piece, self._tag(part, i + 1)), piece))

    def _smaller(self, limit: int | None, exc: SlackApiError) -> int:
        """After ``msg_too_long``: the next, smaller part size; any other error propagates."""
        smaller = (limit or self.limit_chars) // 2
        if error_code(exc) != "msg_too_long" or smaller < MIN_SPLIT_CHARS:
            raise exc
        log.info("message too long for Slack; splitting smaller", extra={"event": "slack_msg_too_long",
                                                                         "limit": smaller})
        return smaller

    async def _post_message(self, text: str, metadata: dict[str, Any] | None) -> str:
        target = self._target
        response = await self._client.chat_postMessage(
            channel=target.channel, thread_ts=target.thread_ts, markdown_text=text, unfurl_links=False,
            metadata=metadata)
        self._replied = True
        return str(response["ts"])

    async def _update(self, ts: str, text: str, metadata: dict[str, Any] | None) -> None:
        # The tag goes with every edit too: a stream that ended without chat.stopStream gets it here.
        await self._client.chat_update(channel=self._target.channel, ts=ts, markdown_text=text, metadata=metadata)
