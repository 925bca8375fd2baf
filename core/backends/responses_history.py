"""Conversation history the gateway keeps in Redis for ``state: replay`` (servers that store nothing).

One JSON value per conversation thread, holding its turns oldest first; a turn is the input
items one answered message added (the user message, the assistant's messages, function calls
and their outputs). Each request replays the history that fits the budget, then the new turn.
A turn enters the history only once its answer completed, so a failed answer leaves no trace.

The value sits beside the conversation's keys (same hash tag) and is written in one fenced
script: a process that lost the conversation's lease cannot write it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field, ValidationError

from core.errors import LeaseLost
from core.keys import Keys
from core.store import translate_errors

log = logging.getLogger(__name__)

Item = dict[str, Any]
Turn = list[Item]

# KEYS: lease, history; ARGV: token ("" = no lease to check), ttl s, value
_FENCED_SET = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
return 1
"""


class ReplayLog(BaseModel):
    """The stored value: turns, oldest first."""

    turns: list[Turn] = Field(default_factory=list)


@dataclass(frozen=True)
class Budget:
    """How much history is replayed: user and assistant messages, and characters of all items."""

    max_messages: int
    max_chars: int


def _messages(turn: Turn) -> int:
    return sum(1 for item in turn if item.get("role") in ("user", "assistant"))


def _chars(turn: Turn) -> int:
    return sum(len(str(item.get(field, ""))) for item in turn for field in ("content", "arguments", "output"))


def _compact(turn: Turn) -> Turn:
    """The turn's messages without its function calls and outputs (the answer tells what they gave)."""
    return [item for item in turn if "role" in item]


def trim(turns: list[Turn], budget: Budget) -> list[Turn]:
    """The newest turns that fit ``budget``, oldest first. Whole turns are dropped, oldest first, so
    a function call never loses its output; the newest turn, if too big alone, is kept compacted
    (messages only) when that fits, else dropped."""
    kept: list[Turn] = []
    messages = chars = 0
    for index, turn in enumerate(reversed(turns)):
        if index == 0 and (_messages(turn) > budget.max_messages or _chars(turn) > budget.max_chars):
            turn = _compact(turn)
        messages += _messages(turn)
        chars += _chars(turn)
        if messages > budget.max_messages or chars > budget.max_chars:
            break
        kept.append(turn)
    return kept[::-1]


class ReplayHistory:
    """Loads and appends a conversation thread's replayed history (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, *, keys: Keys, budget: Budget, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.budget = budget
        self.ttl_s = ttl_s
        self._set = redis.register_script(_FENCED_SET)

    @translate_errors
    async def load(self, conversation: str, thread_id: str) -> list[Item]:
        """The history to replay before a new turn, as one list of input items."""
        return [item for turn in await self._turns(conversation, thread_id) for item in turn]

    @translate_errors
    async def append(self, conversation: str, thread_id: str, turn: Turn, *, lease_token: str | None) -> None:
        """Add a completed turn and trim to the budget, in one write fenced by ``lease_token``.

        Raises ``LeaseLost`` if the lease is no longer ``lease_token``. The read before the write is
        safe because only the lease holder writes.
        """
        turns = trim([*await self._turns(conversation, thread_id), turn], self.budget)
        value = ReplayLog(turns=turns).model_dump_json()
        keys = [self.keys.lease(conversation), self.keys.replay(conversation, thread_id)]
        if int(await self._set(keys=keys, args=[lease_token or "", self.ttl_s, value])) < 0:
            raise LeaseLost(conversation)

    async def _turns(self, conversation: str, thread_id: str) -> list[Turn]:
        raw = await self.redis.get(self.keys.replay(conversation, thread_id))
        if raw is None:
            return []
        try:
            return ReplayLog.model_validate_json(raw).turns
        except ValidationError as exc:
            # A value this version cannot read is history lost, not a reason to stop answering.
            log.warning("unreadable replay history; starting it over", extra={
                "event": "replay_history_unreadable", "thread_id": thread_id, "error": exc.error_count()})
            return []
