"""Helpers for the admin tests: everything in Redis, to prove that a refused command changed nothing."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from core.emulator.assistants import AssistantsEmulator

OPS = {"ops": {"model": "emulator-2", "instructions": "You are ops."}}
"""A second profile on the same backend, told apart from ``helper`` by its instructions."""


async def redis_state(redis: Redis) -> dict[str, Any]:
    """Every key with its type and value (work streams and message bookkeeping included)."""
    state: dict[str, Any] = {}
    for key in sorted(await redis.keys("*")):
        kind = await redis.type(key)
        if kind == "string":
            value: Any = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        else:
            value = await redis.smembers(key) if kind == "set" else None
        state[key] = (kind, value)
    return state


def instructions_used(emulator: AssistantsEmulator) -> list[str]:
    """The instructions of every run so far, oldest first: which profile answered each message."""
    return [run.instructions for run in emulator.state.runs.values()]
