"""Rate limits per user and per channel, per profile (``profiles.<name>.rate_limit``), on Redis.

A limit ``N/window`` allows at most N messages in any sliding window of that length. Each
counted message is a member of a sorted set scored by Redis' own clock (``TIME``), so every
process sees the same windows. One script checks every applicable window and counts the
message in all of them only if none is full: a refused message uses up nothing, and nothing
is queued for it. A redelivery of a message already counted (same platform event ID) passes
without being counted again. The sets expire after their window (``core.keys``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from core.config import RateLimit, RateLimitConfig
from core.keys import Keys
from core.models import Place
from core.store import translate_errors

# KEYS: windows; ARGV: member, then (limit, window ms) per key.
# Returns {0} when counted (or already counted), else {wait ms, index of the full window (1-based)}.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - tonumber(ARGV[2 * i + 1]))
  if redis.call('ZSCORE', key, ARGV[1]) then return {0} end
end
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local freeing = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    return {tonumber(freeing[2]) + window - now, i}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, ARGV[2 * i + 1])
end
return {0}
"""


@dataclass(frozen=True)
class Refusal:
    """A message over a limit: which one, and in how many seconds a message would be taken."""

    kind: str  # "user" | "channel"
    limit: RateLimit
    retry_after_s: int

    def user_message(self) -> str:
        when = f"Try again in {self.retry_after_s} s."
        if self.kind == "user":
            return f"You're sending messages faster than this assistant allows ({self.limit} per person). {when}"
        return f"This channel has reached this assistant's limit ({self.limit}). {when}"


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, *, keys: Keys) -> None:
        self.keys = keys
        self._hit = redis.register_script(_HIT)

    @translate_errors
    async def hit(self, *, place: Place, profile: str, limits: RateLimitConfig, event_id: str) -> Refusal | None:
        """Count the message ``event_id`` against ``profile``'s limits at ``place``; a ``Refusal`` if one is full."""
        windows: list[tuple[str, str, RateLimit]] = []
        user_limit, channel_limit = limits.user_limit(), limits.channel_limit()
        if user_limit is not None:
            windows.append(("user", self.keys.rate(place.platform, place.workspace, profile, "u", place.user),
                            user_limit))
        if channel_limit is not None:
            windows.append(("channel", self.keys.rate(place.platform, place.workspace, profile, "c", place.channel),
                            channel_limit))
        if not windows:
            return None
        args: list[str | int] = [event_id]
        for _, _, limit in windows:
            args += [limit.count, limit.window_s * 1000]
        reply = await self._hit(keys=[key for _, key, _ in windows], args=args)
        if len(reply) < 2:
            return None
        kind, _, limit = windows[int(reply[1]) - 1]
        return Refusal(kind=kind, limit=limit, retry_after_s=max(1, math.ceil(int(reply[0]) / 1000)))
