"""Workers: read work signals, hold conversation leases, answer each conversation's inbox in order.

Invariants that make "never lost, never twice" hold across processes:

- A message is in its conversation's inbox before its work signal is in the stream.
- Whoever holds a conversation's lease answers its inbox head to tail and can release the
  lease only when the inbox is empty (atomically), so a message that arrives meanwhile is
  answered by the holder.
- A driver keeps its own signals unacknowledged until it released the lease: if its process
  dies, the signals stay pending and another worker reclaims them once the lease expired.
- A fresh signal whose conversation is leased elsewhere is acknowledged (the holder will answer
  it); a *reclaimed* one is left pending until its lease can be taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field

from core.engine import Engine, NoSinkForPlatform
from core.errors import LeaseLost, StoreUnavailable
from core.metrics import QUEUE_DEPTH
from core.store import Store

log = logging.getLogger(__name__)


@dataclass
class _Driver:
    conversation: str
    token: str
    entries: list[str] = field(default_factory=list)
    remaining: int = 0
    task: asyncio.Task[None] | None = None


class Worker:
    def __init__(
        self, *, store: Store, engine: Engine, max_concurrent_runs: int, lease_ttl_s: float,
        reclaim_idle_s: float | None = None, read_block_ms: int = 1000,
    ) -> None:
        self.store = store
        self.engine = engine
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_ttl_s = lease_ttl_s
        self.reclaim_idle_s = reclaim_idle_s if reclaim_idle_s is not None else lease_ttl_s * 1.5
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
            # Answers still in flight stop with the worker; their signals stay pending and are reclaimed.
            drivers = [d.task for d in self._drivers.values() if d.task is not None]
            for task in drivers:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)

    async def drain(self, grace_s: float) -> None:
        """Stop taking work, give answers in flight ``grace_s`` to finish, then let ``run`` return.

        The read loops end on their own within one ``read_block_ms``: cancelling a blocking Redis
        read can leave redis-py's connection stuck, so they are never cancelled on purpose.
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

    async def _read_loop(self, partition: int) -> None:
        while not self._stopping.is_set():
            try:
                entries = await self.store.read_work(partition, self.consumer, count=64,
                                                     block_ms=self.read_block_ms)
                for entry_id, conversation in entries:
                    await self._on_signal(conversation, entry_id, reclaimed=False)
            except StoreUnavailable as exc:
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
            except StoreUnavailable as exc:
                log.warning("reclaim failed; retrying", extra={"event": "store_unavailable", "error": str(exc)})

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
            next_at = loop.time() + interval
            held = {conv: d.token for conv, d in self._drivers.items()}
            try:
                results = await self.store.renew_many(held)
            except StoreUnavailable as exc:
                log.warning("lease renewal failed", extra={"event": "store_unavailable", "error": str(exc)})
                continue
            for conv, still_held in results.items():
                driver = self._drivers.get(conv)
                if not still_held and driver is not None and driver.task is not None:
                    log.warning("lease lost; stopping", extra={"event": "lease_lost", "conversation": conv})
                    driver.task.cancel()

    async def _on_signal(self, conversation: str, entry_id: str, *, reclaimed: bool) -> None:
        driver = self._drivers.get(conversation)
        if driver is not None:
            driver.entries.append(entry_id)
            return
        token = uuid.uuid4().hex
        if not await self.store.acquire(conversation, token):
            if not reclaimed:
                # Leased elsewhere: the holder answers the inbox before it can release.
                await self.store.ack_work(conversation, [entry_id])
            return
        driver = _Driver(conversation=conversation, token=token, entries=[entry_id])
        self._drivers[conversation] = driver
        driver.task = asyncio.create_task(self._drive(driver), name=f"drive:{conversation}")
        self._tasks.add(driver.task)
        driver.task.add_done_callback(self._tasks.discard)

    async def _drive(self, driver: _Driver) -> None:
        conv = driver.conversation
        try:
            while True:
                await self._answer_inbox(driver)
                seen = len(driver.entries)
                if await self.store.release(conv, driver.token):
                    del self._drivers[conv]
                    late = driver.entries[seen:]
                    await asyncio.shield(self.store.ack_work(conv, driver.entries[:seen]))
                    for entry_id in late:
                        # Read while we released: their message may have come after; start over safely.
                        await self._on_signal(conv, entry_id, reclaimed=False)
                    return
        except (LeaseLost, NoSinkForPlatform) as exc:
            log.warning("stopped driving conversation", extra={"event": "driver_stopped", "conversation": conv,
                                                                "reason": type(exc).__name__})
        except StoreUnavailable as exc:
            log.error("store unavailable while answering; the work will be reclaimed",
                      extra={"event": "driver_stopped", "conversation": conv, "error": str(exc)})
        finally:
            if self._drivers.get(conv) is driver:
                del self._drivers[conv]
            self._update_depth(driver, 0)

    async def _answer_inbox(self, driver: _Driver) -> None:
        conv, token = driver.conversation, driver.token
        while (pending := await self.store.peek(conv, token)) is not None:
            async with self._slots:
                status = await self.engine.answer(pending, token)
            remaining = await self.store.complete(conv, token, pending.message.id, status=status)
            self._update_depth(driver, remaining)

    def _update_depth(self, driver: _Driver, remaining: int) -> None:
        driver.remaining = remaining
        QUEUE_DEPTH.set(sum(d.remaining for d in self._drivers.values()))
