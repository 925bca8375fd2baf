"""Assistants as code: the backend assistant that answers for each profile.

A profile with ``assistant_id`` names its assistant. A profile with a definition gets one
created on the backend, tagged in metadata with the profile's name and a digest of the
definition, and updated when it differs from the definition; the ID is cached in Redis so every
process (and every restart) uses the same assistant.

``plan`` compares each definition with the backend's current assistant field by field (the
whole create/update surface: name, description, model, instructions, tools, tool_resources,
temperature, top_p, response_format, reasoning_effort, metadata). A field the profile leaves out
is not managed: the backend keeps its value (its default, for a new assistant). The comparison
tolerates what a server adds on its own (a tool's ``strict: false``, defaults inside
``tool_resources``), so an assistant that matches gives an empty diff and ``sync`` changes
nothing — re-running it is safe. With ``prune``, assistants tagged with a profile name the config
no longer defines (and second assistants tagged with the same profile) are planned for deletion;
untagged assistants are never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import openai
import redis.asyncio as aioredis
from openai import AsyncOpenAI

from core.backends.errors import translate
from core.config import ProfileConfig, ToolConfig
from core.keys import Keys

log = logging.getLogger(__name__)

SYNC_LOCK_TTL_S = 15
PROFILE_TAG = "switchboard_profile"
DIGEST_TAG = "switchboard_digest"
FIELDS = ("name", "description", "model", "instructions", "tools", "tool_resources", "temperature", "top_p",
          "response_format", "reasoning_effort", "metadata")
"""The assistant's create/update surface, in the order diffs are shown."""

Action = Literal["create", "update", "unchanged", "delete"]


def function_tools(names: list[str], tools: Mapping[str, ToolConfig]) -> list[dict[str, Any]]:
    """Function tool definitions for the backend, from the tool config (SPEC §7)."""
    return [
        {"type": "function",
         "function": {"name": n, "description": tools[n].description, "parameters": tools[n].parameters}}
        for n in names if n in tools
    ]


def definition(profile_name: str, profile: ProfileConfig, tools: Mapping[str, ToolConfig]) -> dict[str, Any]:
    """The assistant create/update body a definition profile stands for, digest-tagged."""
    body: dict[str, Any] = {
        "name": profile.name or profile_name,
        "description": profile.description,
        "model": profile.model,
        "instructions": profile.instructions,
        "tools": function_tools(profile.tools, tools) + profile.builtin_tools,
        "tool_resources": profile.tool_resources,
        "temperature": profile.temperature,
        "top_p": profile.top_p,
        "response_format": profile.response_format,
        "reasoning_effort": profile.reasoning_effort,
    }
    body = {k: v for k, v in body.items() if v is not None}
    digest = hashlib.sha256(json.dumps([body, profile.metadata], sort_keys=True).encode()).hexdigest()[:16]
    body["metadata"] = {**profile.metadata, PROFILE_TAG: profile_name, DIGEST_TAG: digest}
    return body


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass
class SyncPlan:
    """What ``sync`` does (or would do, with ``--dry-run``) for one profile or tagged assistant."""

    profile: str
    action: Action
    assistant_id: str | None = None
    changes: list[FieldChange] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class SyncResult:
    profile: str
    assistant_id: str
    action: str  # "unchanged" | "created" | "updated" | "deleted"


def covers(actual: Any, wanted: Any) -> bool:
    """True if ``actual`` (from the backend) says what ``wanted`` says; keys the server adds are ignored."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(covers(actual.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(actual, list) and len(actual) == len(wanted) and all(map(covers, actual, wanted))
    if isinstance(wanted, float):
        numeric = isinstance(actual, int | float) and not isinstance(actual, bool)
        return numeric and math.isclose(actual, wanted, rel_tol=1e-9, abs_tol=1e-9)
    return bool(actual == wanted)


def diff(body: Mapping[str, Any], current: Mapping[str, Any] | None) -> list[FieldChange]:
    """The fields of ``body`` the backend's ``current`` assistant does not match (all of them when None)."""
    changes = []
    for name in FIELDS:
        if name not in body:
            continue
        old = None if current is None else current.get(name)
        same = old == body[name] if name == "metadata" else covers(old, body[name])
        if current is None or not same:
            changes.append(FieldChange(name, old, body[name]))
    return changes


class AssistantCatalog:
    def __init__(
        self, *, backend: str, client: AsyncOpenAI, redis: aioredis.Redis, keys: Keys,
        tools: Mapping[str, ToolConfig],
    ) -> None:
        self.backend = backend
        self.client = client
        self.redis = redis
        self.keys = keys
        self.tools = tools
        self._known: dict[str, tuple[str, str]] = {}  # profile -> (digest, assistant id)

    async def assistant_id(self, profile_name: str, profile: ProfileConfig) -> str:
        """The backend assistant for ``profile``; a definition is created or updated first if needed."""
        if profile.assistant_id is not None:
            return profile.assistant_id
        body = definition(profile_name, profile, self.tools)
        digest = body["metadata"][DIGEST_TAG]
        known = self._known.get(profile_name)
        if known is not None and known[0] == digest:
            return known[1]
        key = self.keys.assistant(self.backend, profile_name)
        cached = cast(dict[str, str], await self.redis.hgetall(key))
        if cached.get("digest") == digest and cached.get("id"):
            self._known[profile_name] = (digest, cached["id"])
            return cached["id"]
        # The lock expires soon after a holder that died (a create takes well under a second), so
        # one killed process cannot stall every first answer for long.
        async with self.redis.lock(f"{key}:lock", timeout=SYNC_LOCK_TTL_S, blocking_timeout=2 * SYNC_LOCK_TTL_S):
            cached = cast(dict[str, str], await self.redis.hgetall(key))
            if cached.get("digest") == digest and cached.get("id"):  # another process synced meanwhile
                self._known[profile_name] = (digest, cached["id"])
                return cached["id"]
            result = await self.sync(profile_name, profile)
        return result.assistant_id

    async def sync(self, profile_name: str, profile: ProfileConfig) -> SyncResult:
        """Create or update the profile's assistant so it matches the definition (idempotent)."""
        existing = await self.find(profile_name)
        current = None if existing is None else _fields(existing)
        body = definition(profile_name, profile, self.tools)
        return await self.apply(_plan_one(profile_name, body, current))

    async def plan(self, profiles: Mapping[str, ProfileConfig], *, prune: bool = False,
                   keep: Collection[str] = (), keep_ids: Collection[str] = ()) -> list[SyncPlan]:
        """What syncing ``profiles`` (definitions on this backend) would change, reading every assistant once.

        With ``prune``, tagged assistants whose profile is neither in ``profiles`` nor in ``keep``
        (names defined for other backends, which may be the same server) are planned for deletion,
        except those in ``keep_ids`` (assistants that profiles name by ``assistant_id``).
        """
        tagged = await self.tagged()
        plans = []
        for name, profile in profiles.items():
            found = tagged.get(name, [])
            body = definition(name, profile, self.tools)
            plans.append(_plan_one(name, body, _fields(found[0]) if found else None))
            if prune:
                plans += [SyncPlan(name, "delete", extra.id, note=f"a second assistant for this profile "
                                                                  f"(kept {found[0].id})") for extra in found[1:]]
        if prune:
            plans += [SyncPlan(name, "delete", assistant.id, note="no profile defines it")
                      for name, found in tagged.items() if name not in profiles and name not in keep
                      for assistant in found]
        return [plan for plan in plans if plan.action != "delete" or plan.assistant_id not in keep_ids]

    async def apply(self, plan: SyncPlan) -> SyncResult:
        """Carry ``plan`` out on the backend and in the Redis cache of assistant IDs."""
        assistants = self.client.beta.assistants
        key = self.keys.assistant(self.backend, plan.profile)
        try:
            if plan.action == "create":
                plan.assistant_id = (await assistants.create(**plan.body)).id
            elif plan.action == "update":
                assert plan.assistant_id is not None
                await assistants.update(plan.assistant_id, **{c.field: c.new for c in plan.changes})
            elif plan.action == "delete":
                assert plan.assistant_id is not None
                await assistants.delete(plan.assistant_id)
        except openai.APIError as exc:
            raise translate(exc) from exc
        assert plan.assistant_id is not None
        done = {"create": "created", "update": "updated", "delete": "deleted"}.get(plan.action, plan.action)
        if plan.action == "delete":
            if (await self.redis.hget(key, "id")) == plan.assistant_id:
                await self.redis.delete(key)
        else:
            digest = plan.body["metadata"][DIGEST_TAG]
            await self.redis.hset(key, mapping={"id": plan.assistant_id, "digest": digest})
            self._known[plan.profile] = (digest, plan.assistant_id)
        log.info("assistant synced", extra={"event": "assistant_sync", "profile": plan.profile,
                                            "assistant_id": plan.assistant_id, "action": done})
        return SyncResult(plan.profile, plan.assistant_id, done)

    async def tagged(self) -> dict[str, list[Any]]:
        """Every assistant tagged with a profile name, by profile, oldest first (pages through all)."""
        found: dict[str, list[Any]] = {}
        try:
            async for assistant in self.client.beta.assistants.list(limit=100, order="asc"):
                name = (assistant.metadata or {}).get(PROFILE_TAG)
                if name:
                    found.setdefault(name, []).append(assistant)
        except openai.APIError as exc:
            raise translate(exc) from exc
        return found

    async def find(self, profile_name: str) -> Any | None:
        """The backend assistant tagged with ``profile_name`` (pages through all of them)."""
        try:
            async for assistant in self.client.beta.assistants.list(limit=100, order="asc"):
                if (assistant.metadata or {}).get(PROFILE_TAG) == profile_name:
                    return assistant
        except openai.APIError as exc:
            raise translate(exc) from exc
        return None


def _fields(assistant: Any) -> dict[str, Any]:
    """The backend assistant as plain JSON values (the SDK model keeps fields it does not declare too)."""
    return cast(dict[str, Any], assistant.model_dump(mode="json"))


def _plan_one(profile: str, body: dict[str, Any], current: Mapping[str, Any] | None) -> SyncPlan:
    changes = diff(body, current)
    if current is None:
        return SyncPlan(profile, "create", None, changes, body)
    action: Action = "update" if changes else "unchanged"
    return SyncPlan(profile, action, str(current["id"]), changes, body)
