"""Readings of the system under load, and what two readings say per message.

- gateway CPU and RSS from ``/proc/<pid>`` (CPU time, not wall time: steadier on a shared machine);
- Redis: ``INFO commandstats`` (every command Redis executed, those inside Lua scripts included),
  ``INFO cpu`` and ``INFO memory``, read on the harness's own connection (its ``INFO`` calls are left out);
- the counting proxy's commands and round trips (what the gateway sent and waited for).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from bench.procs import ProxyControl, cpu_seconds, machine_busy_seconds, own_cpu_seconds, rss_bytes

_REPEATS = re.compile(r" x\d+")


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def spread_ms(seconds: Iterable[float | None]) -> dict[str, float | None]:
    """p50 / p99 / max in milliseconds."""
    values = [s * 1000 for s in seconds if s is not None]
    top = max(values) if values else None
    return {"p50": _round(percentile(values, 0.50)), "p99": _round(percentile(values, 0.99)), "max": _round(top),
            "n": len(values)}


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Reading:
    at: float
    gateway_cpu_s: float
    gateway_rss: int
    harness_cpu_s: float
    proxy_cpu_s: float
    emulator_cpu_s: float
    machine_busy_s: float
    redis_cpu_s: float
    redis_calls: dict[str, int]
    redis_memory: int
    proxy: dict[str, Any] | None


class Meter:
    def __init__(self, *, gateway_pid: int, redis: aioredis.Redis, proxy: ProxyControl | None,
                 emulator_pid: int) -> None:
        self.gateway_pid = gateway_pid
        self.emulator_pid = emulator_pid
        self.redis = redis
        self.proxy = proxy

    async def read(self) -> Reading:
        stats = await self.redis.info("commandstats")
        cpu = await self.redis.info("cpu")
        memory = await self.redis.info("memory")
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
                 if name != "cmdstat_info"}
        proxy = await self.proxy.ask("snap") if self.proxy is not None else None
        return Reading(
            at=time.perf_counter(), gateway_cpu_s=cpu_seconds(self.gateway_pid),
            gateway_rss=rss_bytes(self.gateway_pid), harness_cpu_s=own_cpu_seconds(),
            proxy_cpu_s=cpu_seconds(self.proxy.child.pid) if self.proxy is not None else 0.0,
            emulator_cpu_s=cpu_seconds(self.emulator_pid),
            machine_busy_s=machine_busy_seconds(),
            redis_cpu_s=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            redis_calls=calls, redis_memory=int(memory["used_memory"]), proxy=proxy,
        )


def per_message(before: Reading, after: Reading, messages: int) -> dict[str, Any]:
    """What the gateway (and Redis) spent per answered message between two readings."""
    n = max(1, messages)
    wall = max(1e-9, after.at - before.at)
    executed = {k: after.redis_calls.get(k, 0) - before.redis_calls.get(k, 0) for k in after.redis_calls}
    out: dict[str, Any] = {
        "gateway_cpu_ms_per_msg": round((after.gateway_cpu_s - before.gateway_cpu_s) * 1000 / n, 3),
        "gateway_cpu_utilization": round((after.gateway_cpu_s - before.gateway_cpu_s) / wall, 3),
        "harness_cpu_utilization": round((after.harness_cpu_s - before.harness_cpu_s) / wall, 3),
        "emulator_cpu_utilization": round((after.emulator_cpu_s - before.emulator_cpu_s) / wall, 3),
        "other_processes_cores": round(_others(before, after) / wall, 2),
        "redis_cpu_ms_per_msg": round((after.redis_cpu_s - before.redis_cpu_s) * 1000 / n, 3),
        "redis_commands_executed_per_msg": round(sum(executed.values()) / n, 2),
        "redis_executed_by_command_per_msg": {k: round(v / n, 3) for k, v in sorted(executed.items()) if v},
        "gateway_rss_mb": round(after.gateway_rss / 2**20, 1),
    }
    if before.proxy is not None and after.proxy is not None:
        out.update(proxy_per_message(before.proxy, after.proxy, n))
    return out


def _others(before: Reading, after: Reading) -> float:
    """CPU seconds the rest of the machine used (other helpers' tests, say): they compete with the gateway."""
    ours = sum(float(getattr(after, f)) - float(getattr(before, f))
               for f in ("gateway_cpu_s", "harness_cpu_s", "proxy_cpu_s", "emulator_cpu_s", "redis_cpu_s"))
    return max(0.0, after.machine_busy_s - before.machine_busy_s - ours)


def proxy_per_message(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    exchanges: Counter[str] = Counter()
    for label, count in after["by_exchange"].items():
        # Pipelines of one command per held lease differ only in length: count them as one kind.
        exchanges[_REPEATS.sub(" xN", label)] += count - before["by_exchange"].get(label, 0)
    return {
        "redis_round_trips_per_msg": round((after["round_trips"] - before["round_trips"]) / n, 2),
        "redis_commands_sent_per_msg": round((after["commands"] - before["commands"]) / n, 2),
        "redis_round_trips_by_exchange_per_msg": {
            k: round(v / n, 3) for k, v in sorted(exchanges.items(), key=lambda kv: -kv[1]) if v},
    }
