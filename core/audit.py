"""Run-time bindings and their audit trail, changed together.

Every change of a binding (from chat or from the shell) is one Lua script: it reads the old
value, writes the new one and appends an entry to the workspace's audit stream, so there is
never a change without its entry, nor an entry without its change. The stream shares the
binding keys' hash tag (``core.keys``) and is trimmed to ``max_entries``.

An entry records who (``actor``: a platform user ID, or the OS user for the CLI), how
(``via``: ``chat`` or ``cli``), where (platform, workspace, channel or ``*`` for the
workspace default), when (``at``, Unix seconds by Redis' clock) and what (``old`` → ``new``; ``None`` means
"no run-time binding": the config file decides).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

import redis.asyncio as aioredis

from core.keys import AUDIT_MAX_ENTRIES, Keys
from core.store import translate_errors

Via = Literal["chat", "cli"]
WORKSPACE = "*"
"""The ``channel`` of a workspace/guild default."""

# KEYS: binding, audit stream; ARGV: new profile ('' = unset), max entries, then entry field/value pairs.
# ``at`` is Redis' clock, to the microsecond: one clock orders the changes of every process and workspace.
_CHANGE = """
local old = redis.call('GET', KEYS[1]) or ''
if old == ARGV[1] then return {0, old, ''} end
if ARGV[1] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[1]) end
local t = redis.call('TIME')
local at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local entry = {'old', old, 'new', ARGV[1], 'at', at}
for i = 3, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '*', unpack(entry))
return {1, old, at}
"""


@dataclass(frozen=True)
class BindingChange:
    """One audited change of a run-time binding."""

    platform: str
    workspace: str
    channel: str
    old: str | None
    new: str | None
    actor: str
    via: str
    at: float
    entry_id: str = ""

    @property
    def scope(self) -> Literal["channel", "workspace"]:
        return "workspace" if self.channel == WORKSPACE else "channel"

    @property
    def where(self) -> str:
        return f"{self.platform}/{self.workspace or '-'}/{self.channel}"


class BindingLog:
    """Changes run-time bindings with their audit entry (atomically), and reads the trail back."""

    def __init__(self, redis: aioredis.Redis, *, keys: Keys, max_entries: int = AUDIT_MAX_ENTRIES,
                 on_change: Callable[[], None] | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.max_entries = max_entries
        self._on_change = on_change
        """Told after every change this log made (the gateway drops its cached bindings)."""
        self._change = redis.register_script(_CHANGE)

    @translate_errors
    async def change(self, *, platform: str, workspace: str, channel: str, profile: str | None,
                     actor: str, via: Via) -> BindingChange | None:
        """Bind ``profile`` (``None``: remove the run-time binding) at ``channel`` (``*``: the workspace
        default). Returns the change as recorded, or ``None`` when the binding already was that."""
        fields = {"platform": platform, "workspace": workspace, "channel": channel, "actor": actor, "via": via}
        args: list[str | int] = [profile or "", self.max_entries]
        for name, value in fields.items():
            args += [name, value]
        changed, old, at = await self._change(
            keys=[self.keys.binding(platform, workspace, channel), self.keys.audit(platform, workspace)], args=args)
        if self._on_change is not None:
            self._on_change()
        if not int(changed):
            return None
        return BindingChange(platform=platform, workspace=workspace, channel=channel, old=str(old) or None,
                             new=profile, actor=actor, via=via, at=float(at))

    @translate_errors
    async def history(self, *, platform: str | None = None, workspace: str | None = None,
                      limit: int = 50) -> list[BindingChange]:
        """The latest ``limit`` changes, oldest first: of one workspace, or of every workspace."""
        if platform is not None and workspace is not None:
            streams = [self.keys.audit(platform, workspace)]
        else:
            streams = [key async for key in self.redis.scan_iter(match=self.keys.audit_pattern(), count=500)]
        per_stream = [await self._latest(stream, limit) for stream in streams]
        merged = heapq.merge(*per_stream, key=lambda change: (change.at, _order(change.entry_id)))
        changes = [c for c in merged if platform in (None, c.platform) and workspace in (None, c.workspace)]
        return changes[-limit:] if limit else changes

    async def _latest(self, stream: str, limit: int) -> list[BindingChange]:
        entries = cast(list[tuple[str, dict[str, str]]], await self.redis.xrevrange(stream, count=limit or None))
        return [_entry(entry_id, fields) for entry_id, fields in reversed(entries)]


def _entry(entry_id: str, fields: dict[str, str]) -> BindingChange:
    return BindingChange(
        platform=fields.get("platform", ""), workspace=fields.get("workspace", ""), channel=fields.get("channel", ""),
        old=fields.get("old") or None, new=fields.get("new") or None, actor=fields.get("actor", ""),
        via=fields.get("via", ""), at=float(fields.get("at", "0")), entry_id=entry_id,
    )


def _order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)
