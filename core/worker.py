"""Workers: read work signals, hold conversation leases, answer each conversation's inbox in order.

Invariants that make "never lost, never twice" hold across processes:

- A message is in its conversation's inbox before its work signal is in the stream.
- Whoever holds a conversation's lease answers its inbox head to tail and can release the
  lease only when the inbox is empty (atomically), so a message that arrives meanwhile is
  answered by the holder.
- A driver keeps its own signals unacknowledged until it released the lease: if its process
  dies, the signals stay pending and another worker reclaims them once the lease expired.
  While it works, each lease renewal also claims its signals again, so they only look idle
  (reclaimable) once their driver stopped renewing: reclaim idle time ≈ lease TTL, and a dead
  process's conversations move on about one lease TTL after it died.
- A fresh signal whose conversation is leased elsewhere is acknowledged (the holder will answer
  it); a *reclaimed* one is left pending until its lease can be taken (tried once more when the
  lease is due to expire, then by the next reclaim).
- The lease is trusted by the local clock only for ``LEASE_TRUST`` of its TTL after the last
  renewal was *sent*: past that the driver is stopped (``held()`` is false, the engine writes
  nothing more to chat) even if Redis cannot be asked, because another process may take the
  lease once it expires.
- Draining (SIGTERM): no new conversation is taken (signals read meanwhile are put back for
  other workers), a driver finishes the answer in flight and then *hands back* its
  conversation — lease released, conversation signalled again — so another process goes on at
  once instead of after the lease expired; answers still running after the grace period are
  stopped and handed back the same way (the next holder resumes their run).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import RedisError

from core.engine import Engine, NoSinkForPlatform
from core.errors import LeaseLost, StoreUnavailable
from core.metrics import QUEUE_DEPTH
from core.store import Store, retry_unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

LEASE_TRUST = 2 / 3
"""Share of the lease TTL after the last renewal was sent during which the lease is trusted."""
RENEW_RETRY_S = 0.5
"""After a failed renewal, try again this soon (not a whole renewal interval later)."""
HAND_BACK_TIMEOUT_S = 5.0
_LOOP_ERRORS = (StoreUnavailable, RedisError)


@dataclass
class _Driver:
    conversation: str
    token: str
    entries: list[str] = field(default_factory=list)
    """Work signals this driver owns, acknowledged when it releases or hands back the lease."""
    reclaimed: set[str] = field(default_factory=set)
    """Those of ``entries`` taken over from a dead consumer (kept pending if the lease is busy)."""
    retry: bool = True
    """A busy lease is tried again when it is due to expire (once; then the next reclaim)."""
    claimed: bool = False
    valid_until: float = 0.0
    remaining: int = 0
    task: asyncio.Task[None] | None = None
    lost: bool = False
    closing: bool = False
    """Handing the conversation back: signals that arrive now are put back, not taken."""

    def held(self) -> bool:
        """True while the lease is certainly still ours (see ``LEASE_TRUST``)."""
        return self.claimed and not self.lost and time.monotonic() < self.valid_until


class Worker:
    def __init__(
        self, *, store: Store, engine: Engine, max_concurrent_runs: int, lease_ttl_s: float,
        reclaim_idle_s: float | None = None, read_block_ms: int = 1000,
    ) -> None:
        self.store = store
        self.engine = engine
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_ttl_s = lease_ttl_s
        self.reclaim_idle_s = reclaim_idle_s if reclaim_idle_s is not None else lease_ttl_s
        self.read_block_ms = read_block_ms
        self._slots = asyncio.Semaphore(max_concurrent_runs)
        self._drivers: dict[str, _Driver] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    @property
    def active_conversations(self) -> int:
        return len(self._drivers)

    async def run(self) -> None:
        """Work until ``drain`` is called (returns then) or the task is cancelled."""
        await self.store.ensure_groups()
        try:
            async with asyncio.TaskGroup() as group:
                for partition in range(self.store.keys.partitions):
                    group.create_task(self._read_loop(partition))
                    group.create_task(self._reclaim_loop(partition))
                group.create_task(self._renew_loop())
        finally:
            # Whatever still runs stops with the worker; drivers hand their conversations back.
            leftovers = [t for t in self._tasks if not t.done()]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

    async def drain(self, grace_s: float) -> None:
        """Stop taking work, give answers in flight ``grace_s`` to finish, then let ``run`` return.

        Conversations with messages still waiting are handed back to other workers at once. The
        read loops end on their own within one ``read_block_ms``: cancelling a blocking Redis read
        can leave redis-py's connection stuck, so they are never cancelled on purpose.
        """
        self._stopping.set()
        pending = [d.task for d in self._drivers.values() if d.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is draining."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # --- signals ------------------------------------------------------------------------------

    async def _read_loop(self, partition: int) -> None:
        while not self._stopping.is_set():
            try:
                entries = await self.store.read_work(partition, self.consumer, count=64,
                                                     block_ms=self.read_block_ms)
                for entry_id, conversation in entries:
                    await self._on_signal(conversation, entry_id, reclaimed=False)
            except _LOOP_ERRORS as exc:
                log.warning("work stream unreachable; retrying", extra={"event": "store_unavailable",
                                                                         "error": str(exc)})
                await self._pause(1.0)

    async def _reclaim_loop(self, partition: int) -> None:
        idle_ms = int(self.reclaim_idle_s * 1000)
        while not self._stopping.is_set():
            await self._pause(max(0.5, self.reclaim_idle_s / 3))
            if self._stopping.is_set():
                return
            try:
                for entry_id, conversation in await self.store.reclaim_work(partition, self.consumer,
                                                                            min_idle_ms=idle_ms):
                    await self._on_signal(conversation, entry_id, reclaimed=True)
            except _LOOP_ERRORS as exc:
                log.warning("reclaim failed; retrying", extra={"event": "store_unavailable", "error": str(exc)})

    async def _on_signal(self, conversation: str, entry_id: str, *, reclaimed: bool, retry: bool = True) -> None:
        driver = self._drivers.get(conversation)
        if driver is not None and not driver.closing:
            driver.entries.append(entry_id)
            if reclaimed:
                driver.reclaimed.add(entry_id)
            return
        if self._stopping.is_set() or driver is not None:
            # For a worker that is not stopping. Never taken into a driver that is handing back:
            # its acknowledgement would swallow a signal that came after the inbox was checked.
            await self.store.resignal(conversation, [entry_id])
            return
        driver = _Driver(conversation=conversation, token=uuid.uuid4().hex, entries=[entry_id],
                         reclaimed={entry_id} if reclaimed else set(), retry=retry)
        self._drivers[conversation] = driver
        driver.task = self._spawn(self._drive(driver), name=f"drive:{conversation}")

    async def _leased_elsewhere(self, driver: _Driver) -> None:
        """Another process holds the lease: it answers the inbox before it can release, so fresh
        signals are acknowledged; reclaimed ones (their holder may have died) stay pending."""
        conv = driver.conversation
        if self._drivers.get(conv) is driver:
            del self._drivers[conv]
        fresh = [e for e in driver.entries if e not in driver.reclaimed]
        await self.store.ack_work(conv, fresh)
        if driver.retry:
            for entry_id in driver.reclaimed:
                self._spawn(self._claim_when_free(conv, entry_id), name=f"claim:{conv}")

    async def _claim_when_free(self, conversation: str, entry_id: str) -> None:
        """A reclaimed signal whose lease is still held (its holder just died): try again when the
        lease is due to expire, rather than a whole reclaim idle time later."""
        try:
            remaining = await self.store.lease_remaining_s(conversation)
            await self._pause((remaining or 0.0) + 0.05)
            if not self._stopping.is_set():
                await self._on_signal(conversation, entry_id, reclaimed=True, retry=False)
        except _LOOP_ERRORS as exc:
            log.warning("claim failed; the next reclaim tries again", extra={
                "event": "store_unavailable", "conversation": conversation, "error": str(exc)})

    def _spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- leases -------------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        # Leases are renewed until the last answer in flight is done, draining included; the
        # short tick (no I/O) lets the loop end promptly once that happens.
        interval = self.lease_ttl_s / 3
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while not (self._stopping.is_set() and not self._drivers):
            await asyncio.sleep(min(0.25, max(0.0, next_at - loop.time())))
            if loop.time() < next_at:
                continue
            renewed = await self._renew_once()
            next_at = loop.time() + (interval if renewed else min(interval, RENEW_RETRY_S))
            self._stop_untrusted()

    async def _renew_once(self) -> bool:
        """Renew every lease (and touch its signals) in one round trip; False if Redis is unreachable."""
        drivers = {conv: d for conv, d in self._drivers.items() if d.claimed and not d.lost}
        sent_at = time.monotonic()
        try:
            results = await self.store.renew_many(
                {conv: d.token for conv, d in drivers.items()}, consumer=self.consumer,
                entries={conv: list(d.entries) for conv, d in drivers.items()})
        except _LOOP_ERRORS as exc:
            log.warning("lease renewal failed", extra={"event": "store_unavailable", "error": str(exc)})
            return False
        for conv, still_held in results.items():
            driver = drivers[conv]
            if self._drivers.get(conv) is not driver:
                continue  # released (or handed back) while the renewal was on its way
            if still_held:
                driver.valid_until = sent_at + self.lease_ttl_s * LEASE_TRUST
            elif not driver.lost:
                log.warning("lease lost; stopping", extra={"event": "lease_lost", "conversation": conv})
                self._stop(driver)
        return True

    def _stop_untrusted(self) -> None:
        """Stop drivers whose lease could not be renewed in time: another process may own it soon."""
        now = time.monotonic()
        for driver in list(self._drivers.values()):
            if driver.claimed and not driver.lost and now >= driver.valid_until:
                log.warning("lease not renewed in time; stopping", extra={
                    "event": "lease_untrusted", "conversation": driver.conversation})
                self._stop(driver)

    def _stop(self, driver: _Driver) -> None:
        driver.lost = True
        if driver.task is not None:
            driver.task.cancel()

    # --- answering ------------------------------------------------------------------------------

    async def _drive(self, driver: _Driver) -> None:
        conv = driver.conversation
        try:
            async with self._slots:  # one slot per conversation being answered: runs are one at a time
                if self._stopping.is_set():
                    await self.store.resignal(conv, driver.entries)
                    return
                await self._answer_inbox(driver)
        except (LeaseLost, NoSinkForPlatform) as exc:
            log.warning("stopped driving conversation", extra={"event": "driver_stopped", "conversation": conv,
                                                                "reason": type(exc).__name__})
        except StoreUnavailable as exc:
            log.error("store unavailable while answering; the work will be reclaimed",
                      extra={"event": "driver_stopped", "conversation": conv, "error": str(exc)})
        except Exception:  # a bug: the lease expires and another attempt goes on (or gives up, after MAX_ATTEMPTS)
            log.exception("driver failed; the work will be reclaimed", extra={"event": "driver_failed",
                                                                              "conversation": conv})
        except asyncio.CancelledError:
            if driver.claimed and not driver.lost:
                await self._hand_back(driver)
            elif not driver.claimed:
                await self._put_back(driver)
            raise
        finally:
            if self._drivers.get(conv) is driver:
                del self._drivers[conv]
            self._update_depth(driver, 0)

    async def _answer_inbox(self, driver: _Driver) -> None:
        """Claim the conversation and answer its inbox until it is empty (the lease released, the
        signals acknowledged) or the worker drains (handed back). Between two answers one
        ``finish`` round trip records the first and begins the second."""
        conv, token = driver.conversation, driver.token
        seen = len(driver.entries)
        sent_at = time.monotonic()
        step = await self.store.claim(conv, token, deadline_at=self.engine.deadline_at(), entries=driver.entries[:seen])
        if not step.leased:
            await self._leased_elsewhere(driver)
            return
        driver.claimed = True
        driver.valid_until = sent_at + self.lease_ttl_s * LEASE_TRUST
        while step.pending is not None:
            if self._stopping.is_set():
                break  # draining: the begun head goes back with the conversation (a hand-back is no failure)
            pending = step.pending
            self._update_depth(driver, step.waiting)
            status = await self.engine.answer(pending, token, held=driver.held)
            seen = len(driver.entries)
            finish = functools.partial(self.store.finish, conv, token, pending.message.id, status=status,
                                       deadline_at=self.engine.deadline_at(), entries=driver.entries[:seen],
                                       go_on=not self._stopping.is_set())
            step = await self._fenced(driver, finish)
            log.info("message done", extra={"event": "message_done", "conversation": conv,
                                            "message_id": pending.message.id, "status": status})
        if not step.released:
            await self._hand_back(driver)  # draining, with messages still waiting
            return
        del self._drivers[conv]
        for entry_id in driver.entries[seen:]:
            # Read while we released: their message may have come after; start over safely.
            await self._on_signal(conv, entry_id, reclaimed=False)

    async def _put_back(self, driver: _Driver) -> None:
        """A driver stopped before it claimed anything: its signals go back to the stream for others."""
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT_S):
                await asyncio.shield(self.store.resignal(driver.conversation, driver.entries))
        except (*_LOOP_ERRORS, TimeoutError) as exc:
            log.warning("could not put signals back; they will be reclaimed", extra={
                "event": "hand_back_failed", "conversation": driver.conversation, "error": type(exc).__name__})

    async def _fenced(self, driver: _Driver, op: Callable[[], Awaitable[T]]) -> T:
        """A store call of the driver, tried again through a short Redis outage while the lease is ours."""
        return await retry_unavailable(op, while_=driver.held)

    async def _hand_back(self, driver: _Driver) -> None:
        """Give the conversation up now and signal it again for another worker (never raises)."""
        conv = driver.conversation
        driver.closing = True
        entries = list(driver.entries)
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT_S):
                if await asyncio.shield(self.store.hand_back(conv, driver.token)):
                    await asyncio.shield(self.store.ack_work(conv, entries))
        except (*_LOOP_ERRORS, TimeoutError) as exc:
            log.warning("could not hand the conversation back; its lease will expire", extra={
                "event": "hand_back_failed", "conversation": conv, "error": type(exc).__name__})
            return
        driver.lost = True
        log.info("conversation handed back", extra={"event": "handed_back", "conversation": conv})

    def _update_depth(self, driver: _Driver, remaining: int) -> None:
        driver.remaining = remaining
        QUEUE_DEPTH.set(sum(d.remaining for d in self._drivers.values()))
