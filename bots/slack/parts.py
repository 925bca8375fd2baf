"""Marking every message of an answer, and finding an answer's messages again after a crash.

Each message the reply sink creates carries Slack message metadata that names the answer and
the part (``tag``)::

    {"event_type": "switchboard_answer",
     "event_payload": {"message_id": "<InboundMessage.id>", "part": 0, "piece": 0}}

``part`` is core's part index; ``piece`` is 0 for the part's own message and 1, 2, … for the
continuation messages a ``msg_too_long`` re-split added to it (never core parts). Metadata goes
on ``chat.postMessage``, ``chat.update`` and ``chat.stopStream``; ``chat.startStream`` takes none,
so a stream is tagged when it is stopped or edited, and a stream whose process died before that
is an *untagged* message of ours.

``find`` reads the messages after the person's message (``conversations.replies`` in a thread,
``conversations.history`` at the top level of a DM, with ``include_all_metadata``; needs the
``*:history`` scopes) and ``scan`` sorts ours into this answer's tagged parts and pieces, and
untagged candidates. A candidate is only a possible part: it must be ours, in a thread, after the
person's message, after every tagged answer message (any answer's: answers in a thread are
written one at a time) and after every part of this answer already known (the unrecorded post of
a killed attempt is always its last one). ``find`` claims a candidate by stopping its stream with
this answer's tag: only a live stream can be claimed, so a notice or an older answer that happens
to be untagged is never taken for a part.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.client import error_code
from bots.slack.events import BotIdentity

log = logging.getLogger(__name__)

EVENT_TYPE = "switchboard_answer"
PAGE_LIMIT = 200
MAX_CLAIMS = 3


def tag(message_id: str, part: int, piece: int = 0) -> dict[str, Any]:
    """The metadata that marks a message as piece ``piece`` of part ``part`` of answer ``message_id``."""
    return {"event_type": EVENT_TYPE, "event_payload": {"message_id": message_id, "part": part, "piece": piece}}


def ts_key(ts: str) -> tuple[int, int] | None:
    """A Slack ``ts`` (``"1700000000.000100"``) as a sortable pair; None for anything else."""
    seconds, _, fraction = ts.partition(".")
    if not seconds.isdigit() or not (fraction.isdigit() or fraction == ""):
        return None
    return int(seconds), int(fraction or 0)


def wrote(me: BotIdentity, message: Mapping[str, Any]) -> bool:
    """Whether ``message`` (as ``conversations.replies`` returns it) is one of ours."""
    return message.get("user") == me.user_id or (me.bot_id is not None and message.get("bot_id") == me.bot_id)


@dataclass
class Scan:
    """What the messages after the person's message say about one answer."""

    parts: dict[int, str] = field(default_factory=dict)
    """Part index -> ts of the part's own message (piece 0), tagged for this answer."""
    pieces: dict[int, list[str]] = field(default_factory=dict)
    """Part index -> ts of its continuation messages, by piece number (1, 2, …; contiguous)."""
    candidates: list[str] = field(default_factory=list)
    """Untagged messages of ours that may be this answer's next part, latest first."""
    claimed: set[str] = field(default_factory=set)
    """Candidates ``find`` claimed (stopped with this answer's tag); they are in ``parts``."""


@dataclass
class _Seen:
    floor: tuple[int, int]
    pieces: dict[int, dict[int, str]] = field(default_factory=dict)
    untagged: list[tuple[tuple[int, int], str]] = field(default_factory=list)


def scan(messages: Iterable[Mapping[str, Any]], *, message_id: str, after_ts: str, me: BotIdentity,
         known: Mapping[int, str], threaded: bool) -> Scan:
    """Sort our messages after ``after_ts`` (see the module docstring). ``known``: part index ->
    ref of the parts already recorded; ``threaded``: untagged candidates are looked for (only
    threads have streams)."""
    start = ts_key(after_ts)
    if start is None:
        return Scan()
    seen = _Seen(floor=max([start, *(k for k in map(ts_key, known.values()) if k is not None)]))
    known_refs = set(known.values())
    for message in messages:
        _sort(message, seen, message_id=message_id, start=start, me=me, known_refs=known_refs)
    found = Scan()
    for part, by_piece in seen.pieces.items():
        if 0 in by_piece:
            found.parts[part] = by_piece[0]
        found.pieces[part] = _contiguous(by_piece)
    if threaded:
        later = sorted((k, ts) for k, ts in seen.untagged if k > seen.floor)
        found.candidates = [ts for _, ts in reversed(later)]
    return found


def _sort(message: Mapping[str, Any], seen: _Seen, *, message_id: str, start: tuple[int, int], me: BotIdentity,
          known_refs: set[str]) -> None:
    ts = str(message.get("ts") or "")
    key = ts_key(ts)
    if key is None or key <= start or not wrote(me, message):
        return
    metadata = message.get("metadata")
    if not metadata:
        if ts not in known_refs:
            seen.untagged.append((key, ts))
        return
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != EVENT_TYPE:
        return  # ours, but marked as something else (not an answer): never a part
    seen.floor = max(seen.floor, key)
    payload = metadata.get("event_payload") or {}
    part, piece = payload.get("part"), payload.get("piece", 0)
    if payload.get("message_id") != message_id or not isinstance(part, int) or not isinstance(piece, int):
        return
    by_piece = seen.pieces.setdefault(part, {})
    earlier = by_piece.get(piece)
    if earlier is None or (ts_key(earlier) or key) < key:  # a duplicate: the latest attempt's wins
        by_piece[piece] = ts


def _contiguous(by_piece: Mapping[int, str]) -> list[str]:
    pieces: list[str] = []
    while len(pieces) + 1 in by_piece:
        pieces.append(by_piece[len(pieces) + 1])
    return pieces


async def find(client: AsyncWebClient, *, channel: str, thread_ts: str | None, after_ts: str,
               me: Callable[[], Awaitable[BotIdentity]], message_id: str, known: Mapping[int, str],
               read_timeout_s: float) -> Scan:
    """This answer's messages after the person's message ``after_ts``: those tagged for it, and the
    latest candidate (at most ``MAX_CLAIMS`` are tried) whose stream is still open, claimed as the
    part after the highest known or found one by stopping its stream with that part's tag; a
    candidate that is not a live stream is not an unfinished part of ours. Raises ``SlackApiError``,
    network errors, and ``TimeoutError`` when the reading takes longer than ``read_timeout_s``."""
    async with asyncio.timeout(read_timeout_s):
        identity = await me()
        messages = await read_after(client, channel=channel, thread_ts=thread_ts, after_ts=after_ts)
    found = scan(messages, message_id=message_id, after_ts=after_ts, me=identity, known=known,
                 threaded=thread_ts is not None)
    index = max([*known, *found.parts], default=-1) + 1
    for ts in found.candidates[:MAX_CLAIMS]:
        try:
            await client.chat_stopStream(channel=channel, ts=ts, metadata=tag(message_id, index))
        except SlackApiError as exc:
            log.info("not a part of this answer", extra={"event": "slack_claim_refused", "ts": ts,
                                                          "error": error_code(exc)})
            continue
        log.info("claimed a stream an interrupted attempt started", extra={
            "event": "slack_part_claimed", "ts": ts, "part": index, "message_id": message_id})
        found.parts[index] = ts
        found.claimed.add(ts)
        break
    return found


async def read_after(client: AsyncWebClient, *, channel: str, thread_ts: str | None,
                     after_ts: str) -> list[Mapping[str, Any]]:
    """Every message after ``after_ts`` in the thread ``thread_ts`` (at the top level of the channel
    when None), with its metadata, all pages. Raises ``SlackApiError`` and network errors."""
    if thread_ts:
        first = await client.conversations_replies(channel=channel, ts=thread_ts, oldest=after_ts,
                                                   include_all_metadata=True, limit=PAGE_LIMIT)
    else:
        first = await client.conversations_history(channel=channel, oldest=after_ts, include_all_metadata=True,
                                                   limit=PAGE_LIMIT)
    messages: list[Mapping[str, Any]] = []
    async for page in first:  # slack-sdk follows response_metadata.next_cursor
        messages.extend(page.get("messages") or [])
    return messages
