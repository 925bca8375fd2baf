"""Which profile answers in a place: channel → workspace/guild default → global default.

Run-time bindings (set by admins, in Redis) win over the config file's at each level.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel

from core.config import Config
from core.models import Place
from core.store import Store

BindingSource = Literal["channel", "workspace", "global"]

RUNTIME_FRESH_S = 2.0
"""How long run-time bindings read from Redis are reused for answering in this process. A change
made here takes effect at once (the cache is dropped); one made elsewhere within this time."""
CACHE_MAX = 10_000


class Binding(BaseModel):
    profile: str
    source: BindingSource
    origin: Literal["runtime", "config"]


class BindingResolver:
    def __init__(self, *, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._runtime: dict[tuple[str, str, str], tuple[float, tuple[str | None, str | None]]] = {}

    def forget(self) -> None:
        """Drop the cached run-time bindings (after this process changed one)."""
        self._runtime.clear()

    async def resolve(self, place: Place, *, fresh: bool = False) -> Binding:
        """The profile for ``place``; a binding to a profile the config no longer has is skipped.
        Run-time bindings may be up to ``RUNTIME_FRESH_S`` old unless ``fresh`` (admin commands)."""
        runtime_channel, runtime_workspace = await self._runtime_bindings(place, fresh=fresh)
        configured = getattr(self.config.bindings, place.platform).get(place.workspace, {})
        candidates: list[tuple[str | None, BindingSource, Literal["runtime", "config"]]] = [
            (runtime_channel, "channel", "runtime"),
            (configured.get(place.channel), "channel", "config"),
            (runtime_workspace, "workspace", "runtime"),
            (configured.get("default"), "workspace", "config"),
            (self.config.default_profile(), "global", "config"),
        ]
        for profile, source, origin in candidates:
            if profile is not None and profile in self.config.profiles:
                return Binding(profile=profile, source=source, origin=origin)
        # Config validation guarantees at least one profile exists.
        first = next(iter(self.config.profiles))
        return Binding(profile=first, source="global", origin="config")

    async def _runtime_bindings(self, place: Place, *, fresh: bool) -> tuple[str | None, str | None]:
        key = (place.platform, place.workspace, place.channel)
        cached = self._runtime.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        values = await self.store.get_bindings(*key)
        if len(self._runtime) >= CACHE_MAX:
            self._runtime.clear()  # bounded; refilled by the next lookups
        self._runtime[key] = (now + RUNTIME_FRESH_S, values)
        return values
