"""Assistants as code: the backend assistant that answers for each profile.

A profile with ``assistant_id`` names its assistant. A profile with a definition gets one
created on the backend, tagged in metadata with the profile's name and a digest of the
definition, and updated when the definition changes; the ID is cached in Redis so every
process (and every restart) uses the same assistant.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import openai
import redis.asyncio as aioredis
from openai import AsyncOpenAI

from core.backends.errors import translate
from core.config import ProfileConfig, ToolConfig
from core.keys import Keys

log = logging.getLogger(__name__)

PROFILE_TAG = "switchboard_profile"
DIGEST_TAG = "switchboard_digest"


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


@dataclass
class SyncResult:
    profile: str
    assistant_id: str
    action: str  # "unchanged" | "created" | "updated"


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
        async with self.redis.lock(f"{key}:lock", timeout=60, blocking_timeout=60):
            result = await self.sync(profile_name, profile)
        return result.assistant_id

    async def sync(self, profile_name: str, profile: ProfileConfig) -> SyncResult:
        """Create or update the profile's assistant so it matches the definition (idempotent)."""
        body = definition(profile_name, profile, self.tools)
        digest = body["metadata"][DIGEST_TAG]
        try:
            existing = await self.find(profile_name)
            if existing is None:
                created = await self.client.beta.assistants.create(**body)
                result = SyncResult(profile_name, created.id, "created")
            elif (existing.metadata or {}).get(DIGEST_TAG) == digest:
                result = SyncResult(profile_name, existing.id, "unchanged")
            else:
                await self.client.beta.assistants.update(existing.id, **body)
                result = SyncResult(profile_name, existing.id, "updated")
        except openai.APIError as exc:
            raise translate(exc) from exc
        await self.redis.hset(self.keys.assistant(self.backend, profile_name),
                              mapping={"id": result.assistant_id, "digest": digest})
        self._known[profile_name] = (digest, result.assistant_id)
        log.info("assistant synced", extra={"event": "assistant_sync", "profile": profile_name,
                                            "assistant_id": result.assistant_id, "action": result.action})
        return result

    async def find(self, profile_name: str) -> Any | None:
        """The backend assistant tagged with ``profile_name`` (pages through all of them)."""
        async for assistant in self.client.beta.assistants.list(limit=100, order="asc"):
            if (assistant.metadata or {}).get(PROFILE_TAG) == profile_name:
                return assistant
        return None
