"""The process's resources, opened once and closed on shutdown: one Redis pool, one HTTP client
for tools, one SDK client per backend — and the core objects built on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx2

from core.backends import BackendSet, build_backends
from core.config import Config, ToolConfig
from core.engine import Engine
from core.gateway import Gateway
from core.keys import Keys
from core.settings import Settings
from core.store import Store, StoreLimits
from core.tools import HttpToolRunner
from core.worker import Worker


@runtime_checkable
class _SendsToolSchemas(Protocol):
    """A backend (or assistant catalog) that sends the config's tool schemas to the service."""

    tools: Mapping[str, ToolConfig]


@dataclass
class Runtime:
    settings: Settings
    config: Config
    store: Store
    gateway: Gateway
    engine: Engine
    worker: Worker
    backends: BackendSet
    http: httpx2.AsyncClient

    def apply_config(self, config: Config) -> None:
        """Use a validated new config for new runs (tools, profiles, bindings; backends stay)."""
        self.config = config
        self.gateway.apply_config(config)
        self.engine.tools = HttpToolRunner(tools=config.tools, http=self.http)
        for holder in [*self.backends.catalogs.values(), *self.backends.backends.values()]:
            if isinstance(holder, _SendsToolSchemas):
                holder.tools = config.tools


def keys_for(config: Config) -> Keys:
    return Keys(prefix=config.redis.key_prefix, partitions=config.redis.partitions)


@asynccontextmanager
async def open_runtime(settings: Settings, config: Config, *, redis_url: str) -> AsyncIterator[Runtime]:
    """Open everything; raises ``StoreUnavailable`` or ``ConfigError`` with a clear message if it can't."""
    gateway_conf = config.gateway
    async with Store.connect(redis_url) as redis, httpx2.AsyncClient(follow_redirects=False) as http:
        keys = keys_for(config)
        store = Store(redis, keys=keys, limits=StoreLimits(
            lease_ttl_s=gateway_conf.lease_ttl_s, dedupe_ttl_s=gateway_conf.dedupe_ttl_s,
            conversation_ttl_s=gateway_conf.conversation_ttl_s,
        ))
        backends = build_backends(config=config, settings=settings, redis=redis, keys=keys)
        try:
            gateway = Gateway(store=store, config=config)
            engine = Engine(gateway=gateway, store=store, backends=backends.backends,
                            tools=HttpToolRunner(tools=config.tools, http=http))
            worker = Worker(store=store, engine=engine, max_concurrent_runs=gateway_conf.max_concurrent_runs,
                            lease_ttl_s=gateway_conf.lease_ttl_s)
            yield Runtime(settings=settings, config=config, store=store, gateway=gateway, engine=engine,
                          worker=worker, backends=backends, http=http)
        finally:
            await backends.aclose()
