"""Redis store: durable intake, conversation → thread map, per-conversation leases, message records.

Every multi-key change is one Lua script (one round trip, atomic, Cluster-safe through hash
tags). Every write done while answering is *fenced*: it checks that this process still holds
the conversation's lease, so a process that lost its lease cannot write.

Message lifecycle: ``accept`` records the message, appends it to its conversation's inbox and
signals the partition's work stream, all before the platform is acknowledged. A worker that
holds the lease answers the inbox head to tail: ``claim`` takes the lease and begins the head,
``finish`` records the answer, pops it and begins the next; both give the lease up (and
acknowledge the driver's signals) only when the inbox is empty, atomically, so a message that
arrives meanwhile is never orphaned. A message costs the driver three round trips: its begin
(in ``claim`` or the previous ``finish``), ``record_run`` (with the first chat message's ref where
the backend can find a run again) and its ``finish``, plus one per further chat message posted.
``hand_back`` gives it up at once (shutdown) and signals the conversation again so another
process takes it now.

A message record (``{t}:msg:<id>``) says how far answering got, so recovery can go on from there:
``status`` (queued → starting → running → answered | failed), ``attempts`` and ``handbacks``
(attempts that ended by a graceful hand-back), ``deadline_at`` (set before a run is started),
``run`` (RunRef JSON, set when the run exists), ``refs`` (chat messages already posted, by part
index) and ``run_cancelled`` (why the gateway cancelled the run, if it did).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import LeaseLost, StoreUnavailable
from core.keys import MESSAGE_PENDING_TTL_S, WORK_GROUP, Keys
from core.models import InboundMessage, RunRef

# redis-py's types allow bytes; the pool is opened with decode_responses=True, so values are str.
POOL_MAX_CONNECTIONS = 256
POOL_WAIT_S = 2.0  # well inside Slack's 3 s acknowledgement deadline
_StreamReply = list[tuple[str, list[tuple[str, dict[str, str]]]]] | None
P = ParamSpec("P")
T = TypeVar("T")

_ACCEPT = """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('HSET', KEYS[2], 'payload', ARGV[2], 'status', 'queued')
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('HSETNX', KEYS[4], 'created', ARGV[7])
redis.call('EXPIRE', KEYS[4], ARGV[5])
redis.call('XADD', KEYS[5], '*', 'conv', ARGV[6], 'msg', ARGV[1])
return {1, ARGV[1]}
"""

# The head of an inbox, begun: counted as an attempt, given a deadline, marked ``starting`` unless
# its run is known; or, with the inbox empty, the lease released and the driver's signals acked.
# KEYS: lease, inbox, conv, work stream; ARGV (from ``a``): msg key prefix, msg ttl, deadline_at,
# go on ('1' | '0'), entry ids ...
_NEXT = """
local function next_head(a)
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head then
    redis.call('DEL', KEYS[1])
    if #ARGV >= a + 4 then
      redis.call('XACK', KEYS[4], '""" + WORK_GROUP + """', unpack(ARGV, a + 4))
      redis.call('XDEL', KEYS[4], unpack(ARGV, a + 4))
    end
    return {0}
  end
  if ARGV[a + 3] ~= '1' then return {3, redis.call('LLEN', KEYS[2])} end
  local key = ARGV[a] .. head
  if redis.call('HEXISTS', key, 'payload') == 0 then return {2, head} end
  local prior = redis.call('HGET', key, 'status') or 'queued'
  redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSETNX', key, 'deadline_at', ARGV[a + 2])
  if redis.call('HEXISTS', key, 'run') == 0 then redis.call('HSET', key, 'status', 'starting') end
  redis.call('EXPIRE', key, ARGV[a + 1])
  return {1, head, prior, redis.call('HGETALL', key), redis.call('HGETALL', KEYS[3]), redis.call('LLEN', KEYS[2])}
end
"""

# Take the lease (ARGV[2] = ttl ms) or check it is ours (ARGV[2] = ''), then ``next_head``.
# KEYS: lease, inbox, conv, work stream; ARGV: token, ttl ms, then next_head's from 3.
_CLAIM = _NEXT + """
if ARGV[2] ~= '' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-2} end
elseif redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
return next_head(3)
"""

# Complete the answered head, then ``next_head``: one round trip between two answers.
# KEYS: lease, inbox, conv, work stream, msg; ARGV: token, message id, status, done ttl, now,
# then next_head's from 6.
_FINISH = _NEXT + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
if redis.call('LINDEX', KEYS[2], 0) == ARGV[2] then redis.call('LPOP', KEYS[2]) end
redis.call('HSET', KEYS[5], 'status', ARGV[3], 'finished_at', ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[4])
return next_head(6)
"""

# KEYS: lease, msg, conv; ARGV: token, run JSON, thread field, thread id, msg ttl, conv ttl[, refs JSON]
_RECORD_RUN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[2], 'run', ARGV[2], 'status', 'running')
if ARGV[7] then redis.call('HSET', KEYS[2], 'refs', ARGV[7]) end
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 1
"""

# KEYS: lease, target hash; ARGV: token, ttl, field, value, field, value, ...
_FENCED_HSET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS: lease, inbox, msg; ARGV: token, message id, status, msg ttl
_COMPLETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('LINDEX', KEYS[2], 0) == ARGV[2] then redis.call('LPOP', KEYS[2]) end
redis.call('HSET', KEYS[3], 'status', ARGV[3], 'finished_at', ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return redis.call('LLEN', KEYS[2])
"""

# KEYS: lease, inbox, work stream; ARGV: token, conversation, msg key prefix
_HAND_BACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
local head = redis.call('LINDEX', KEYS[2], 0)
if not head then return 0 end
local msg = ARGV[3] .. head
if redis.call('EXISTS', msg) == 1 then redis.call('HINCRBY', msg, 'handbacks', 1) end
redis.call('XADD', KEYS[3], '*', 'conv', ARGV[2], 'msg', '')
return 1
"""

# KEYS: lease; ARGV: token, ttl ms
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: conv; ARGV: field prefix
_RESET = """
local fields = redis.call('HKEYS', KEYS[1])
local n = 0
for _, f in ipairs(fields) do
  if string.sub(f, 1, string.len(ARGV[1])) == ARGV[1] then redis.call('HDEL', KEYS[1], f); n = n + 1 end
end
return n
"""


def translate_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Map redis-py's connection failures to ``StoreUnavailable`` where they enter."""

    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis unreachable: {type(exc).__name__}") from exc

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@dataclass
class Accepted:
    message_id: str
    duplicate: bool


@dataclass
class Pending:
    """The head of a conversation's inbox, begun by ``claim``/``finish`` (this attempt counted),
    with what was recorded about it so far."""

    message: InboundMessage
    status: str
    """The status recorded before this attempt (``queued`` for a message nobody has tried yet)."""
    record: dict[str, str]
    threads: dict[str, str] = field(default_factory=dict)

    @property
    def reply_refs(self) -> dict[int, str]:
        raw = self.record.get("refs")
        return {int(k): v for k, v in json.loads(raw).items()} if raw else {}

    @property
    def run(self) -> RunRef | None:
        raw = self.record.get("run")
        return RunRef.model_validate_json(raw) if raw else None


@dataclass
class Step:
    """Where a driver stands after ``claim`` or ``finish``.

    ``pending``: the next message, begun. Otherwise ``released`` (the inbox was empty: the lease
    is given up and the driver's signals acknowledged) or, when told not to go on, neither: the
    driver still holds the lease and hands the conversation back. ``leased`` is False when
    ``claim`` found the lease held elsewhere.
    """

    pending: Pending | None = None
    released: bool = False
    waiting: int = 0
    leased: bool = True


@dataclass
class StoreLimits:
    lease_ttl_s: float = 10.0
    dedupe_ttl_s: int = 86_400
    conversation_ttl_s: int = 90 * 86_400


class Store:
    """All of Switchboard's Redis access. One instance per process, over one connection pool."""

    def __init__(self, redis: aioredis.Redis, *, keys: Keys, limits: StoreLimits) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self._accept = redis.register_script(_ACCEPT)
        self._fenced_hset = redis.register_script(_FENCED_HSET)
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._record_run = redis.register_script(_RECORD_RUN)
        self._complete = redis.register_script(_COMPLETE)
        self._renew = redis.register_script(_RENEW)
        self._hand_back = redis.register_script(_HAND_BACK)
        self._reset = redis.register_script(_RESET)

    @staticmethod
    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[aioredis.Redis]:
        """Open the process's one Redis pool; fail fast with ``StoreUnavailable`` if unreachable."""
        # One immediate retry on a fresh connection: after a Redis restart every pooled connection
        # is dead once, and a command should not fail for that. Longer outages fail fast instead
        # (StoreUnavailable), so intake can refuse within the platform's ack deadline.
        # A blocking pool: under a burst, a command waits briefly for a free connection instead
        # of failing at once with MaxConnectionsError (which turned intake into 503s under load).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30,
            retry=Retry(NoBackoff(), 1), max_connections=POOL_MAX_CONNECTIONS, timeout=POOL_WAIT_S,
        )
        client = aioredis.Redis.from_pool(pool)
        try:
            try:
                await client.ping()
            except (RedisError, OSError) as exc:
                raise StoreUnavailable(f"cannot reach Redis at {_redact(url)}: {exc}") from exc
            yield client
        finally:
            await client.aclose()

    @translate_errors
    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # --- intake -----------------------------------------------------------------------------

    @translate_errors
    async def accept(self, message: InboundMessage) -> Accepted:
        """Durably record ``message`` unless its event was seen before. One round trip."""
        conv = message.conversation
        k = self.keys
        new, message_id = await self._accept(
            keys=[k.seen(conv, message.place.platform, message.event_id), k.msg(conv, message.id),
                  k.inbox(conv), k.conv(conv), k.work_for(conv)],
            args=[message.id, message.model_dump_json(), self.limits.dedupe_ttl_s, MESSAGE_PENDING_TTL_S,
                  self.limits.conversation_ttl_s, conv, f"{time.time():.3f}"],
        )
        return Accepted(message_id=str(message_id), duplicate=not int(new))

    @translate_errors
    async def has_conversation(self, conversation: str) -> bool:
        return bool(await self.redis.exists(self.keys.conv(conversation)))

    @translate_errors
    async def reset(self, conversation: str) -> int:
        """Forget the conversation's backend threads: the next message starts a new one."""
        return int(await self._reset(keys=[self.keys.conv(conversation)], args=["thread:"]))

    # --- work stream --------------------------------------------------------------------------

    @translate_errors
    async def ensure_groups(self) -> None:
        for partition in range(self.keys.partitions):
            await self._ensure_group(partition)

    async def _ensure_group(self, partition: int) -> None:
        try:
            await self.redis.xgroup_create(self.keys.work(partition), WORK_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @translate_errors
    async def read_work(
        self, partition: int, consumer: str, *, count: int, block_ms: int
    ) -> list[tuple[str, str]]:
        """New work signals for ``consumer``: (entry id, conversation).

        A stream or group that vanished (Redis restarted without its data) is created again.
        """
        try:
            reply = cast(_StreamReply, await self.redis.xreadgroup(
                WORK_GROUP, consumer, {self.keys.work(partition): ">"}, count=count, block=block_ms,
            ))
        except ResponseError as exc:
            if not _no_group(exc):
                raise
            await self._ensure_group(partition)
            return []
        return [(eid, fields["conv"]) for _, entries in reply or [] for eid, fields in entries]

    @translate_errors
    async def reclaim_work(
        self, partition: int, consumer: str, *, min_idle_ms: int, count: int = 64
    ) -> list[tuple[str, str]]:
        """Signals left pending by consumers that went quiet (died) for ``min_idle_ms``.

        The whole pending list is scanned (XAUTOCLAIM looks at ``10 × count`` entries per call and
        returns where to go on): idle signals behind many busy ones are found too.
        """
        found: list[tuple[str, str]] = []
        cursor = "0-0"
        while True:
            try:
                reply = await self.redis.xautoclaim(
                    self.keys.work(partition), WORK_GROUP, consumer, min_idle_time=min_idle_ms, start_id=cursor,
                    count=count,
                )
            except ResponseError as exc:
                if not _no_group(exc):
                    raise
                await self._ensure_group(partition)
                return found
            entries: list[tuple[str, dict[str, str]]] = list(reply[1]) if reply else []
            found += [(eid, fields["conv"]) for eid, fields in entries if fields]
            cursor = str(reply[0]) if reply else "0-0"
            if cursor == "0-0":
                return found

    @translate_errors
    async def resignal(self, conversation: str, entry_ids: list[str]) -> None:
        """Put the conversation's signal back for any worker (this one is stopping) and drop ours."""
        stream = self.keys.work_for(conversation)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, {"conv": conversation, "msg": ""})
            if entry_ids:
                pipe.xack(stream, WORK_GROUP, *entry_ids)
                pipe.xdel(stream, *entry_ids)
            await pipe.execute()

    @translate_errors
    async def ack_work(self, conversation: str, entry_ids: list[str]) -> None:
        if not entry_ids:
            return
        stream = self.keys.work_for(conversation)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, WORK_GROUP, *entry_ids)
            pipe.xdel(stream, *entry_ids)
            await pipe.execute()

    # --- leases -------------------------------------------------------------------------------

    @translate_errors
    async def renew_many(
        self, leases: dict[str, str], *, consumer: str | None = None, entries: dict[str, list[str]] | None = None,
    ) -> dict[str, bool]:
        """Renew several leases in one round trip: {conversation: still held}.

        ``entries`` (conversation -> work entry ids) are claimed again by ``consumer``, which
        resets their idle time: signals of a conversation that is being answered never look
        abandoned to other workers' reclaim, however long the answer takes.
        """
        if not leases:
            return {}
        ttl_ms = int(self.limits.lease_ttl_s * 1000)
        touched = {conv: ids for conv, ids in (entries or {}).items() if ids and conv in leases}
        async with self.redis.pipeline(transaction=False) as pipe:
            for conv, token in leases.items():
                await self._renew(keys=[self.keys.lease(conv)], args=[token, ttl_ms], client=pipe)
            if consumer is not None:
                for conv, ids in touched.items():
                    claimed: list[Any] = list(ids)
                    pipe.xclaim(self.keys.work_for(conv), WORK_GROUP, consumer, 0, claimed, justid=True)
            results = await pipe.execute(raise_on_error=False)
        renewed = results[:len(leases)]
        for result in renewed:
            if isinstance(result, Exception):
                raise result
        return {conv: bool(int(r)) for conv, r in zip(leases, renewed, strict=True)}

    @translate_errors
    async def lease_remaining_s(self, conversation: str) -> float | None:
        """Seconds until the conversation's lease expires; None if nobody holds it."""
        remaining_ms = int(await self.redis.pttl(self.keys.lease(conversation)))
        return remaining_ms / 1000 if remaining_ms >= 0 else None

    @translate_errors
    async def hand_back(self, conversation: str, token: str) -> bool:
        """Give the lease up now, messages waiting or not, and signal the conversation again if
        any wait, so another process answers them without waiting for the lease to expire. The
        inbox head's record counts it (``handbacks``): a hand-back is not a failed attempt.
        False if the lease was not ours any more (nothing changed)."""
        k = self.keys
        result = int(await self._hand_back(
            keys=[k.lease(conversation), k.inbox(conversation), k.work_for(conversation)],
            args=[token, conversation, k.msg(conversation, "")],
        ))
        return result >= 0

    # --- answering (all fenced by the lease) -------------------------------------------------

    @translate_errors
    async def claim(self, conversation: str, token: str, *, deadline_at: float, entries: list[str],
                    acquire: bool = True) -> Step:
        """Take the conversation's lease (``acquire``; else check it is ours) and begin its inbox
        head, in one round trip. With the inbox empty the lease is released at once and
        ``entries`` (the driver's work signals) acknowledged. ``Step.leased`` is False if another
        holder has the lease; ``LeaseLost`` if ``acquire`` is False and the lease is not ours."""
        k = self.keys
        ttl = str(int(self.limits.lease_ttl_s * 1000)) if acquire else ""
        reply = await self._claim(keys=[k.lease(conversation), k.inbox(conversation), k.conv(conversation),
                                        k.work_for(conversation)],
                                  args=[token, ttl, *self._next_args(conversation, deadline_at, True, entries)])
        if int(reply[0]) == -2:
            return Step(leased=False)
        return await self._step(conversation, token, reply, deadline_at=deadline_at, entries=entries)

    @translate_errors
    async def finish(self, conversation: str, token: str, message_id: str, *, status: str, deadline_at: float,
                     entries: list[str], go_on: bool = True) -> Step:
        """Record the head's final ``status``, pop it, and begin the next one (unless not ``go_on``)
        or release the lease if none waits — one round trip between two answers."""
        k = self.keys
        reply = await self._finish(
            keys=[k.lease(conversation), k.inbox(conversation), k.conv(conversation), k.work_for(conversation),
                  k.msg(conversation, message_id)],
            args=[token, message_id, status, self.limits.dedupe_ttl_s, f"{time.time():.3f}",
                  *self._next_args(conversation, deadline_at, go_on, entries)],
        )
        return await self._step(conversation, token, reply, deadline_at=deadline_at, entries=entries)

    def _next_args(self, conversation: str, deadline_at: float, go_on: bool, entries: list[str]) -> list[str]:
        return [self.keys.msg(conversation, ""), str(MESSAGE_PENDING_TTL_S), f"{deadline_at:.3f}",
                "1" if go_on else "0", *entries]

    async def _step(self, conversation: str, token: str, reply: list[Any], *, deadline_at: float,
                    entries: list[str]) -> Step:
        kind = int(reply[0])
        if kind == -1:
            raise LeaseLost(conversation)
        if kind == 0:
            return Step(released=True)
        if kind == 3:
            return Step(waiting=int(reply[1]))
        if kind == 2:
            # The head's record expired while queued: drop it so the inbox cannot stall on it.
            await self.complete(conversation, token, str(reply[1]), status="lost")
            return await self.claim(conversation, token, deadline_at=deadline_at, entries=entries, acquire=False)
        record, conv = _pairs(reply[3]), _pairs(reply[4])
        threads = {f.removeprefix("thread:"): v for f, v in conv.items() if f.startswith("thread:")}
        message = InboundMessage.model_validate_json(record["payload"])
        pending = Pending(message=message, status=str(reply[2]), record=record, threads=threads)
        return Step(pending=pending, waiting=int(reply[5]))

    async def record(self, message: InboundMessage, token: str, **fields: str) -> None:
        """Fenced update of the message's record (status, run, reply refs, …)."""
        await self._hset(message.conversation, token, self.keys.msg(message.conversation, message.id),
                         MESSAGE_PENDING_TTL_S, fields)

    async def record_thread(self, message: InboundMessage, token: str, backend: str, thread_id: str) -> None:
        """The conversation's thread on ``backend``, known before any run is started on it."""
        conv = message.conversation
        await self._hset(conv, token, self.keys.conv(conv), self.limits.conversation_ttl_s,
                         {f"thread:{backend}": thread_id})

    @translate_errors
    async def record_run(self, message: InboundMessage, token: str, run: RunRef, *, refs: str | None = None) -> None:
        """Which run answers this message, on which thread (and, with ``refs``, the chat messages
        posted so far: the first one's record can carry the run's)."""
        conv, k = message.conversation, self.keys
        args: list[Any] = [token, run.model_dump_json(), f"thread:{run.backend}", run.thread_id, MESSAGE_PENDING_TTL_S,
                           self.limits.conversation_ttl_s]
        result = await self._record_run(keys=[k.lease(conv), k.msg(conv, message.id), k.conv(conv)],
                                        args=args + ([refs] if refs is not None else []))
        if int(result) < 0:
            raise LeaseLost(conv)

    @translate_errors
    async def complete(self, conversation: str, token: str, message_id: str, *, status: str) -> int:
        """Mark answered and pop it from the inbox. Returns how many messages still wait."""
        k = self.keys
        result = int(await self._complete(
            keys=[k.lease(conversation), k.inbox(conversation), k.msg(conversation, message_id)],
            args=[token, message_id, status, self.limits.dedupe_ttl_s, f"{time.time():.3f}"],
        ))
        if result < 0:
            raise LeaseLost(conversation)
        return result

    @translate_errors
    async def _hset(self, conversation: str, token: str, key: str, ttl_s: int, fields: dict[str, str]) -> None:
        args: list[Any] = [token, ttl_s]
        for name, value in fields.items():
            args += [name, value]
        if int(await self._fenced_hset(keys=[self.keys.lease(conversation), key], args=args)) < 0:
            raise LeaseLost(conversation)

    # --- bindings ------------------------------------------------------------------------------

    @translate_errors
    async def get_bindings(self, platform: str, workspace: str, channel: str) -> tuple[str | None, str | None]:
        """(channel binding, workspace default) set at run time, in one round trip."""
        k = self.keys
        values = cast(list[str | None], await self.redis.mget(
            k.binding(platform, workspace, channel), k.binding(platform, workspace, "*"),
        ))
        return values[0], values[1]

    @translate_errors
    async def list_bindings(self) -> list[tuple[str, str, str, str]]:
        """Every run-time binding: (platform, workspace, channel or ``*``, profile)."""
        out = []
        async for key in self.redis.scan_iter(match=self.keys.binding_pattern(), count=500):
            value = cast(str | None, await self.redis.get(key))
            if value is not None:
                out.append((*self.keys.parse_binding(key), value))
        return sorted(out)


async def retry_unavailable(op: Callable[[], Awaitable[T]], *, while_: Callable[[], bool],
                            first_delay_s: float = 0.1, max_delay_s: float = 1.0) -> T:
    """``op()``, tried again while Redis is unreachable and ``while_()`` holds (e.g. the lease is
    still ours by the local clock): a Redis restart of a second or two costs a pause, not an answer."""
    delay = first_delay_s
    while True:
        try:
            return await op()
        except StoreUnavailable:
            if not while_():
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


def _no_group(exc: ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _redact(url: str) -> str:
    """A Redis URL without its password, for error text."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
