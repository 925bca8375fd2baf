"""The driver's round trips on real Redis: ``claim`` and ``finish`` (lease, begin, release, acks),
``record_run`` in one script, and the short-lived cache of run-time bindings."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from core.audit import BindingLog
from core.bindings import RUNTIME_FRESH_S, BindingResolver
from core.config import parse_config
from core.errors import LeaseLost
from core.keys import MESSAGE_PENDING_TTL_S, WORK_GROUP, Keys
from core.models import InboundMessage, Place, RunRef
from core.store import Store, StoreLimits

CONV = "console:t:steps"


def message(n: int) -> InboundMessage:
    return InboundMessage(event_id=f"E{n}", conversation=CONV, text=f"m{n}",
                          place=Place(platform="console", workspace="t", channel="c", user="u"), reply_to={})


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> Store:
    store = Store(redis_client, keys=Keys(), limits=StoreLimits(lease_ttl_s=10))
    await store.ensure_groups()
    return store


async def signals(store: Store, consumer: str = "w1") -> list[str]:
    """Accepted messages' work signals, read as a worker would (pending until acknowledged)."""
    return [eid for eid, _ in await store.read_work(0, consumer, count=64, block_ms=10)]


async def test_claim_begins_the_head_and_finish_begins_the_next(store: Store) -> None:
    first, second = message(1), message(2)
    for m in (first, second):
        await store.accept(m)
    entries = await signals(store)
    deadline = time.time() + 60

    step = await store.claim(CONV, "tok", deadline_at=deadline, entries=entries)
    assert step.leased and step.pending is not None and step.waiting == 2
    assert step.pending.message.id == first.id
    assert step.pending.status == "queued"  # as recorded before this attempt
    assert step.pending.record["status"] == "starting" and step.pending.record["attempts"] == "1"
    assert float(step.pending.record["deadline_at"]) == pytest.approx(deadline, abs=0.01)

    step = await store.finish(CONV, "tok", first.id, status="answered", deadline_at=deadline, entries=entries)
    assert step.pending is not None and step.pending.message.id == second.id and step.waiting == 1
    record = await store.redis.hgetall(store.keys.msg(CONV, first.id))
    assert record["status"] == "answered" and "finished_at" in record
    assert await store.redis.ttl(store.keys.msg(CONV, first.id)) <= store.limits.dedupe_ttl_s
    assert await store.redis.get(store.keys.lease(CONV)) == "tok"
    assert (await store.redis.xpending(store.keys.work(0), WORK_GROUP))["pending"] == 2  # not yet acked

    step = await store.finish(CONV, "tok", second.id, status="answered", deadline_at=deadline, entries=entries)
    assert step.released and step.pending is None
    assert await store.redis.get(store.keys.lease(CONV)) is None
    assert (await store.redis.xpending(store.keys.work(0), WORK_GROUP))["pending"] == 0
    assert await store.redis.xlen(store.keys.work(0)) == 0  # acknowledged signals are deleted too


async def test_a_second_attempt_sees_what_the_first_recorded(store: Store) -> None:
    first = message(1)
    await store.accept(first)
    step = await store.claim(CONV, "dead", deadline_at=time.time() + 60, entries=[])
    assert step.pending is not None
    run = RunRef(backend="default", thread_id="thread_1", run_id="run_1")
    await store.record_run(first, "dead", run)
    await store.redis.delete(store.keys.lease(CONV))  # the first holder died; its lease expired

    later = await store.claim(CONV, "next", deadline_at=time.time() + 600, entries=[])
    assert later.pending is not None
    assert later.pending.status == "running" and later.pending.run == run
    assert later.pending.record["status"] == "running"  # a known run is not "starting" again
    assert later.pending.record["attempts"] == "2"
    assert later.pending.record["deadline_at"] == step.pending.record["deadline_at"]  # the first deadline holds
    assert later.pending.threads == {"default": "thread_1"}
    assert await store.redis.ttl(store.keys.msg(CONV, first.id)) > MESSAGE_PENDING_TTL_S - 5


async def test_claim_of_a_busy_lease_changes_nothing(store: Store) -> None:
    first = message(1)
    await store.accept(first)
    await store.redis.set(store.keys.lease(CONV), "other", px=10_000)
    step = await store.claim(CONV, "tok", deadline_at=time.time() + 60, entries=await signals(store))
    assert not step.leased and step.pending is None
    assert await store.redis.get(store.keys.lease(CONV)) == "other"
    record = await store.redis.hgetall(store.keys.msg(CONV, first.id))
    assert record["status"] == "queued" and "attempts" not in record


async def test_claim_of_an_empty_inbox_releases_at_once_and_acks_the_signals(store: Store) -> None:
    first = message(1)
    await store.accept(first)
    entries = await signals(store)
    await store.claim(CONV, "earlier", deadline_at=time.time() + 60, entries=[])  # answered by an earlier holder
    assert (await store.finish(CONV, "earlier", first.id, status="answered", deadline_at=time.time() + 60,
                               entries=[])).released
    step = await store.claim(CONV, "tok", deadline_at=time.time() + 60, entries=entries)
    assert step.leased and step.released and step.pending is None
    assert await store.redis.get(store.keys.lease(CONV)) is None
    assert (await store.redis.xpending(store.keys.work(0), WORK_GROUP))["pending"] == 0


async def test_finish_without_going_on_keeps_the_lease_for_a_hand_back(store: Store) -> None:
    first, second = message(1), message(2)
    for m in (first, second):
        await store.accept(m)
    step = await store.claim(CONV, "tok", deadline_at=time.time() + 60, entries=[])
    step = await store.finish(CONV, "tok", first.id, status="answered", deadline_at=time.time() + 60, entries=[],
                              go_on=False)
    assert step.pending is None and not step.released and step.waiting == 1
    assert await store.redis.get(store.keys.lease(CONV)) == "tok"
    record = await store.redis.hgetall(store.keys.msg(CONV, second.id))
    assert record["status"] == "queued" and "attempts" not in record  # not begun: no attempt counted


async def test_finish_on_a_lost_lease_writes_nothing(store: Store) -> None:
    first = message(1)
    await store.accept(first)
    await store.claim(CONV, "tok", deadline_at=time.time() + 60, entries=[])
    await store.redis.set(store.keys.lease(CONV), "thief")
    with pytest.raises(LeaseLost):
        await store.finish(CONV, "tok", first.id, status="answered", deadline_at=time.time() + 60, entries=[])
    with pytest.raises(LeaseLost):
        await store.record_run(first, "tok", RunRef(backend="default", thread_id="t", run_id="r"))
    assert (await store.redis.hgetall(store.keys.msg(CONV, first.id)))["status"] == "starting"
    assert await store.redis.lrange(store.keys.inbox(CONV), 0, -1) == [first.id]
    assert await store.redis.hgetall(store.keys.conv(CONV)) == {"created": await store.redis.hget(
        store.keys.conv(CONV), "created")}


async def test_a_head_whose_record_expired_is_dropped_not_stalled_on(store: Store) -> None:
    first, second = message(1), message(2)
    for m in (first, second):
        await store.accept(m)
    await store.redis.delete(store.keys.msg(CONV, first.id))
    step = await store.claim(CONV, "tok", deadline_at=time.time() + 60, entries=[])
    assert step.pending is not None and step.pending.message.id == second.id
    assert (await store.redis.hgetall(store.keys.msg(CONV, first.id)))["status"] == "lost"


async def test_runtime_bindings_are_reused_briefly_and_dropped_on_a_local_change(
    store: Store, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse_config({"profiles": {"a": {"model": "m", "instructions": "x"},
                                        "b": {"model": "m", "instructions": "y"}}}, source="(test)", env={})
    resolver = BindingResolver(store=store, config=config)
    here = BindingLog(redis_client, keys=store.keys, on_change=resolver.forget)
    elsewhere = BindingLog(redis_client, keys=store.keys)  # another process (or the CLI)
    place = Place(platform="console", workspace="t", channel="c", user="u")
    clock = [1000.0]
    monkeypatch.setattr("core.bindings.time.monotonic", lambda: clock[0])

    assert (await resolver.resolve(place)).profile == "a"
    await elsewhere.change(platform="console", workspace="t", channel="c", profile="b", actor="x", via="cli")
    assert (await resolver.resolve(place)).profile == "a"  # cached…
    assert (await resolver.resolve(place, fresh=True)).profile == "b"  # …except for admin commands
    await here.change(platform="console", workspace="t", channel="c", profile="a", actor="x", via="chat")
    assert (await resolver.resolve(place)).profile == "a"
    await elsewhere.change(platform="console", workspace="t", channel="c", profile="b", actor="x", via="cli")
    clock[0] += RUNTIME_FRESH_S + 0.01
    assert (await resolver.resolve(place)).profile == "b"  # seen within RUNTIME_FRESH_S


async def test_record_run_can_carry_the_first_parts_ref(store: Store) -> None:
    first = message(1)
    await store.accept(first)
    await store.claim(CONV, "tok", deadline_at=time.time() + 60, entries=[])
    run = RunRef(backend="default", thread_id="thread_1", run_id="run_1")
    await store.record_run(first, "tok", run, refs='{"0": "ts-1"}')
    step = await store.claim(CONV, "tok", deadline_at=time.time() + 60, entries=[], acquire=False)
    assert step.pending is not None
    assert step.pending.run == run and step.pending.reply_refs == {0: "ts-1"} and step.pending.status == "running"
