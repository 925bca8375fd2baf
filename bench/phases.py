"""The measurements, each a phase run on the same system one after another.

- ``trace``: one new conversation and one reply on an idle gateway, every Redis exchange in order;
- ``memory``: RSS per idle conversation, after creating N conversations;
- ``ack``: open-loop arrivals at a fixed rate (ack latency as the sender sees it);
- ``concurrent``: many conversations talking at once, at most one message each waiting for its answer
  (gateway-added latency: event sent -> final answer written, minus the backend's time for that run);
- ``throughput``: open-loop steps of increasing rate until one is not sustained.

Every load phase also reports gateway CPU, Redis commands and round trips per message (``meter``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.load import Conversation, Sample, bounded, conversations, open_loop, paced_conversations
from bench.meter import Reading, per_message, spread_ms
from bench.system import System

ACK_LIMIT_S = 0.100
ADDED_LIMIT_S = 1.0
SETTLE_S = 0.5  # after the last answer: the gateway still clears the status, completes and releases
TRACE_SETTLE_S = 0.5


@dataclass(frozen=True)
class Plan:
    """How big each phase is: ``quick`` (CI's smoke test, under a minute) or the full run (under ten)."""

    ack_rate: float
    ack_s: float
    conversations: int
    period_s: float
    concurrent_s: float
    memory_warm: int
    memory_count: int
    memory_in_flight: int
    rates: tuple[float, ...]
    step_s: float
    answer_timeout_s: float


QUICK = Plan(ack_rate=50, ack_s=2, conversations=200, period_s=4, concurrent_s=3, memory_warm=30,
             memory_count=100, memory_in_flight=50, rates=(50, 100), step_s=1, answer_timeout_s=10)
FULL = Plan(ack_rate=100, ack_s=30, conversations=200, period_s=2, concurrent_s=60, memory_warm=300,
            memory_count=3000, memory_in_flight=50,
            rates=(10, 20, 35, 50, 70, 100, 140, 200, 280, 400, 560, 800), step_s=8, answer_timeout_s=30)

Load = Callable[[], Awaitable[list[Sample]]]


async def measured(system: System, load: Load, *, answer_timeout_s: float) -> tuple[list[Sample], dict[str, Any]]:
    """Run ``load``, wait for its answers, and summarize latencies and per-message costs."""
    before = await system.meter.read()
    started = time.perf_counter()
    samples = await load()
    unanswered = await system.tracker.wait(samples, answer_timeout_s)
    system.tracker.abandon(samples)
    await asyncio.sleep(SETTLE_S)
    after = await system.meter.read()
    system.tracker.attribute_backend_time(await system.assistants.runs())
    return samples, summarize(samples, before, after, unanswered=unanswered, started=started)


def summarize(samples: list[Sample], before: Reading, after: Reading, *, unanswered: int,
              started: float) -> dict[str, Any]:
    answered = [s for s in samples if s.answered_at is not None]
    last = max((s.answered_at for s in answered if s.answered_at is not None), default=started)
    return {
        "messages": len(samples),
        "answered": len(answered),
        "unanswered": unanswered,
        "refused": sum(1 for s in samples if s.status != 200),
        "duration_s": round(last - started, 2),
        "answers_per_s": round(len(answered) / max(1e-9, last - started), 1),
        "ack_ms": spread_ms(s.ack_s for s in samples if s.status == 200),
        "added_ms": spread_ms(s.added_s for s in answered),
        "added_ms_new_conversation": spread_ms(s.added_s for s in answered if s.kind == "new"),
        "added_ms_reply": spread_ms(s.added_s for s in answered if s.kind == "reply"),
        "e2e_ms": spread_ms(s.e2e_s for s in answered),
        "backend_ms": spread_ms(s.backend_s for s in answered),
        **per_message(before, after, len(answered)),
    }


def _open_loop(system: System, pool: list[Conversation], *, rate: float, count: int) -> Load:
    return lambda: open_loop(system.sender, pool, rate=rate, count=count)


async def trace(system: System) -> dict[str, Any]:
    """Every Redis exchange of one new conversation's message, then of one reply in it, on an idle gateway."""
    if system.proxy is None:
        return {"skipped": "the gateway talks to Redis directly (--direct-redis)"}
    pool = conversations(1, prefix="C0TRACE")
    out: dict[str, Any] = {}
    for kind in ("new", "reply"):
        await asyncio.sleep(TRACE_SETTLE_S)  # let the previous answer's tail settle
        await system.proxy.ask("trace on")
        sample = await system.sender.send(pool[0])
        await system.tracker.wait([sample], 10)
        await asyncio.sleep(TRACE_SETTLE_S)
        exchanges = (await system.proxy.ask("snap"))["trace"] or []
        await system.proxy.ask("trace off")
        origin = sample.sent_at
        out[kind] = {
            "ack_ms": round((sample.ack_s or 0) * 1000, 2),
            "e2e_ms": round((sample.e2e_s or 0) * 1000, 2),
            "exchanges": [{"at_ms": round((x["at"] - origin) * 1000, 2), "ms": x["ms"], "exchange": x["exchange"]}
                          for x in sorted(exchanges, key=lambda x: x["at"])],
        }
    return out


async def ack(system: System, plan: Plan) -> dict[str, Any]:
    count = int(plan.ack_rate * plan.ack_s)
    pool = conversations(max(1, int(plan.ack_rate)), prefix="C0ACK")  # one message per conversation per second
    _, result = await measured(system, _open_loop(system, pool, rate=plan.ack_rate, count=count),
                               answer_timeout_s=plan.answer_timeout_s)
    return {"rate": plan.ack_rate, **result}


async def concurrent(system: System, plan: Plan) -> dict[str, Any]:
    pool = conversations(plan.conversations, prefix="C0CONC")

    def load() -> Awaitable[list[Sample]]:
        return paced_conversations(system.sender, pool, period_s=plan.period_s, duration_s=plan.concurrent_s,
                                   answer_timeout_s=plan.answer_timeout_s)

    _, result = await measured(system, load, answer_timeout_s=plan.answer_timeout_s)
    return {"conversations": plan.conversations, "period_s": plan.period_s,
            "offered_rate": round(plan.conversations / plan.period_s, 1), **result}


async def memory(system: System, plan: Plan) -> dict[str, Any]:
    """Warm up (allocator, caches), then create ``memory_count`` conversations of one message each,
    as fast as the gateway answers them; the RSS growth once they are all answered and idle, per
    conversation."""
    warm = conversations(plan.memory_warm, prefix="C0WARM")
    await measured(system, _bounded(system, warm, plan), answer_timeout_s=plan.answer_timeout_s)
    system.slack.forget()
    await asyncio.sleep(1.0)
    before = await system.meter.read()
    pool = conversations(plan.memory_count, prefix="C0MEM")
    _, result = await measured(system, _bounded(system, pool, plan), answer_timeout_s=plan.answer_timeout_s)
    await asyncio.sleep(1.0)
    after = await system.meter.read()
    n = max(1, plan.memory_count)
    return {
        "conversations": plan.memory_count,
        "gateway_rss_before_mb": round(before.gateway_rss / 2**20, 1),
        "gateway_rss_after_mb": round(after.gateway_rss / 2**20, 1),
        "gateway_rss_kb_per_conversation": round((after.gateway_rss - before.gateway_rss) / 1024 / n, 2),
        "redis_kb_per_conversation": round((after.redis_memory - before.redis_memory) / 1024 / n, 2),
        "answers_per_s": result["answers_per_s"],
        "unanswered": result["unanswered"],
    }


def _bounded(system: System, pool: list[Conversation], plan: Plan) -> Load:
    return lambda: bounded(system.sender, pool, in_flight=plan.memory_in_flight,
                           answer_timeout_s=plan.answer_timeout_s)


async def throughput(system: System, plan: Plan) -> dict[str, Any]:
    """Open-loop steps of rising rate, each started once the previous one's answers are in.

    - ``ack_limited``: the last rate before the first whose ack p99 passed 100 ms (or that got a refusal);
    - ``answers_keep_up``: the last rate, in an unbroken run from the first step, at which every message
      was also answered with added latency p99 within 1 s (a gateway that falls behind queues, and
      its latency grows with the queue).

    Stepping stops at the first step over the ack limit, or after two steps in a row whose answers
    did not keep up (the backlog would only distort what follows)."""
    steps: list[dict[str, Any]] = []
    ack_limited = keep_up = 0.0
    misses = 0
    for rate in plan.rates:
        backlog = await system.tracker.drain(plan.answer_timeout_s)
        system.slack.forget()
        pool = conversations(max(1, int(rate)), prefix=f"C0T{int(rate)}x")
        _, result = await measured(system, _open_loop(system, pool, rate=rate, count=int(rate * plan.step_s)),
                                   answer_timeout_s=plan.answer_timeout_s)
        ack_p99, added_p99 = result["ack_ms"]["p99"], result["added_ms"]["p99"]
        acked = result["refused"] == 0 and ack_p99 is not None and ack_p99 <= ACK_LIMIT_S * 1000
        kept_up = (acked and result["unanswered"] == 0 and added_p99 is not None
                   and added_p99 <= ADDED_LIMIT_S * 1000)
        steps.append({"rate": rate, "acked_in_time": acked, "answers_kept_up": kept_up,
                      "backlog_before": backlog, **result})
        if not acked:
            break
        ack_limited = rate
        if kept_up and misses == 0:
            keep_up = rate
        misses = 0 if kept_up else misses + 1
        if misses >= 2:
            break
    return {"ack_limited": ack_limited, "answers_keep_up": keep_up,
            "ack_limit_reached": bool(steps) and not steps[-1]["acked_in_time"],
            "criteria": {"ack_limited": "every message acknowledged 200, ack p99 <= 100 ms",
                         "answers_keep_up": "also every message answered, added latency p99 <= 1 s"},
            "steps": steps}
