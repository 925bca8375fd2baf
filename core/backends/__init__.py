"""Assistant backends behind ``core.ports.Backend``, built from the ``backends:`` config."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
import redis.asyncio as aioredis
from openai import AsyncOpenAI, DefaultAioHttpClient

from core.backends.assistants import AssistantsBackend
from core.backends.catalog import AssistantCatalog
from core.backends.responses import ConversationsBackend, ResponsesBackend
from core.backends.responses_history import Budget, ReplayHistory
from core.config import BackendConfig, Config
from core.errors import ConfigError
from core.keys import Keys
from core.ports import Backend
from core.settings import Settings


@dataclass
class BackendSet:
    """The process's backends and the SDK clients they own (closed together)."""

    backends: dict[str, Backend]
    clients: dict[str, AsyncOpenAI]
    catalogs: dict[str, AssistantCatalog]

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.close()


def used_backends(config: Config) -> set[str]:
    return {p.backend for p in config.profiles.values()}


CONNECTION_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=30.0)
"""Idle connections are kept (a TLS handshake less per run against the real API) however many
conversations answer at once, for 30 s between a conversation's messages."""


def make_client(name: str, backend: BackendConfig, settings: Settings) -> AsyncOpenAI:
    """One SDK client per backend connection; ``default`` falls back to OPENAI_API_KEY / OPENAI_BASE_URL."""
    key = backend.api_key or settings.openai_api_key
    if key is None:
        raise ConfigError("environment", [
            f"backends.{name}: no API key: set OPENAI_API_KEY or the backend's api_key "
            "(any non-empty value for servers that need none)"])
    return AsyncOpenAI(
        api_key=key.get_secret_value(), base_url=backend.base_url or settings.openai_base_url,
        max_retries=backend.max_retries, timeout=backend.timeout_s,
        # aiohttp under httpx2's API (the SDK's own option): httpcore2's pool checks every idle
        # connection for readability on each request, ~1 ms per message with 200 conversations.
        http_client=DefaultAioHttpClient(limits=CONNECTION_LIMITS, timeout=backend.timeout_s),
    )


def responses_backend(
    name: str, conf: BackendConfig, client: AsyncOpenAI, *, config: Config, redis: aioredis.Redis, keys: Keys,
) -> ResponsesBackend:
    """A ``kind: responses`` backend; ``state: replay`` keeps its history in Redis for as long as conversations."""
    if conf.state == "conversations":
        return ConversationsBackend(name=name, client=client, tools=config.tools)
    history = None
    if conf.state == "replay":
        budget = Budget(max_messages=conf.replay_max_messages, max_chars=conf.replay_max_chars)
        history = ReplayHistory(redis, keys=keys, budget=budget, ttl_s=config.gateway.conversation_ttl_s)
    return ResponsesBackend(name=name, client=client, state=conf.state, tools=config.tools, history=history)


def build_backends(*, config: Config, settings: Settings, redis: aioredis.Redis, keys: Keys) -> BackendSet:
    """Backends for every backend a profile uses. Raises ``ConfigError`` listing every problem."""
    problems: list[str] = []
    result = BackendSet({}, {}, {})
    for name in sorted(used_backends(config)):
        conf = config.backends[name]
        try:
            client = make_client(name, conf, settings)
        except ConfigError as exc:
            problems += exc.problems
            continue
        result.clients[name] = client
        if conf.kind == "responses":
            result.backends[name] = responses_backend(name, conf, client, config=config, redis=redis, keys=keys)
            continue
        catalog = AssistantCatalog(backend=name, client=client, redis=redis, keys=keys, tools=config.tools)
        result.catalogs[name] = catalog
        result.backends[name] = AssistantsBackend(name=name, client=client, catalog=catalog)
    if problems:
        raise ConfigError("backends", problems)
    return result
