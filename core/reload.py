"""Hot reload of the config file: on request (SIGHUP) and when the file changes on disk.

``ConfigReloader.run`` looks at the file every ``gateway.config_poll_s`` seconds (0: only on
request). A change of its size, modification time or inode counts, so an editor that writes a
new file and renames it over the old one is seen too. A file that does not validate is refused:
every problem is logged and the running config stays. A valid one is applied for new runs and
events (``Runtime.apply_config``): profiles, tools, bindings, allowlists, rate limits, limits
read per run, platform options read per event. Settings this process only reads at start are
compared with the start-up config and named in a warning (they need a restart); a config whose
profiles need a backend this process did not open is refused, since nothing could answer them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Config, load_config
from core.errors import ConfigError

log = logging.getLogger(__name__)

_Signature = tuple[int, int, int] | None
# Read once, when the process starts: a new value needs a restart.
_START_ONLY_GATEWAY = ("max_concurrent_runs", "lease_ttl_s", "dedupe_ttl_s", "conversation_ttl_s")
_START_ONLY_DISCORD = ("message_content", "shard_count", "shard_ids")


@dataclass(frozen=True)
class ReloadResult:
    applied: bool
    problems: list[str] = field(default_factory=list)
    """Why the file was refused (then nothing changed)."""
    restart_needed: list[str] = field(default_factory=list)
    """Settings that changed but take effect only after a restart."""


def unavailable_backends(new: Config, running: Collection[str]) -> list[str]:
    """Problems for profiles whose backend this process has not opened."""
    return [f"profiles.{name}.backend: backend {profile.backend!r} is not running in this process "
            "(a new backend needs a restart)"
            for name, profile in new.profiles.items() if profile.backend not in running]


def restart_needed(started: Config, new: Config) -> list[str]:
    """Settings of ``new`` that differ from those the process started with and are only read at start."""
    changed = [f"backends.{name}" for name in sorted(set(started.backends) & set(new.backends))
               if started.backends[name] != new.backends[name]]
    if started.redis != new.redis:
        changed.append("redis")
    changed += [f"gateway.{key}" for key in _START_ONLY_GATEWAY
                if getattr(started.gateway, key) != getattr(new.gateway, key)]
    changed += [f"discord.{key}" for key in _START_ONLY_DISCORD
                if getattr(started.discord, key) != getattr(new.discord, key)]
    return changed


def _signature(path: Path) -> _Signature:
    try:
        stat = os.stat(path)
    except OSError:
        return None  # missing for now (being replaced?): reported when a reload reads it
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class ConfigReloader:
    """Re-reads ``path`` and hands each valid config to ``apply``. ``current`` is the config in use."""

    def __init__(self, path: Path, *, current: Callable[[], Config], apply: Callable[[Config], None],
                 running_backends: Collection[str], load: Callable[[Path], Config] = load_config) -> None:
        self.path = path
        self._current = current
        self._apply = apply
        self._started = current()
        self._running = frozenset(running_backends)
        self._load = load
        self._wake = asyncio.Event()
        self._stopping = False
        self._seen: _Signature = None

    def request(self) -> None:
        """Reload soon (the SIGHUP handler)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Watch the file until ``stop()``."""
        self._seen = await asyncio.to_thread(_signature, self.path)
        while True:
            await self._wait()
            if self._stopping:
                return
            requested = self._wake.is_set()
            self._wake.clear()
            seen = await asyncio.to_thread(_signature, self.path)
            if requested or seen != self._seen:
                self._seen = seen
                await self.reload("signal" if requested else "file changed")

    async def _wait(self) -> None:
        poll_s = self._current().gateway.config_poll_s
        try:
            async with asyncio.timeout(poll_s or None):
                await self._wake.wait()
        except TimeoutError:
            return

    async def reload(self, reason: str) -> ReloadResult:
        """Read the file now; apply it if it is valid and this process can serve it."""
        try:
            new = await asyncio.to_thread(self._load, self.path)
        except ConfigError as exc:
            return self._refuse(reason, exc.problems)
        problems = unavailable_backends(new, self._running)
        if problems:
            return self._refuse(reason, problems)
        later = restart_needed(self._started, new)
        self._apply(new)
        log.info("config reloaded from %s", self.path, extra={
            "event": "config_reloaded", "reason": reason, "profiles": len(new.profiles)})
        if later:
            log.warning("config reloaded, but these settings take effect only after a restart: %s",
                        ", ".join(later), extra={"event": "config_restart_needed", "settings": later})
        return ReloadResult(applied=True, restart_needed=later)

    def _refuse(self, reason: str, problems: list[str]) -> ReloadResult:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        log.error("config reload refused, the running config stays: %s has %d problem(s):\n%s",
                  self.path, len(problems), listing,
                  extra={"event": "config_reload_refused", "reason": reason, "problems": problems})
        return ReloadResult(applied=False, problems=problems)
