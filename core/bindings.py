"""Which profile answers in a place: channel → workspace/guild default → global default.

Run-time bindings (set by admins, in Redis) win over the config file's at each level.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from core.config import Config
from core.models import Place
from core.store import Store

BindingSource = Literal["channel", "workspace", "global"]


class Binding(BaseModel):
    profile: str
    source: BindingSource
    origin: Literal["runtime", "config"]


class BindingResolver:
    def __init__(self, *, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    async def resolve(self, place: Place) -> Binding:
        """The profile for ``place``; a binding to a profile the config no longer has is skipped."""
        runtime_channel, runtime_workspace = await self.store.get_bindings(
            place.platform, place.workspace, place.channel
        )
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
