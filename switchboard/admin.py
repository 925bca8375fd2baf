"""Shell commands for admins: ``check``, ``assistants sync|list``, ``bindings list|show|set|unset|history``."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import redis.asyncio as aioredis

from core.audit import BindingChange, BindingLog
from core.backends import make_client, used_backends
from core.backends.catalog import PROFILE_TAG, AssistantCatalog, SyncPlan
from core.bindings import BindingResolver
from core.config import Config, load_config
from core.errors import ConfigError, StoreUnavailable, SwitchboardError
from core.models import Place
from core.runtime import keys_for
from core.settings import Settings
from core.store import Store, StoreLimits

Check = Callable[[], Awaitable[list[str]]]


async def check(settings: Settings) -> int:
    """Validate config and reach every dependency; one line per problem, non-zero if any."""
    problems: list[str] = []
    config: Config | None = None
    try:
        config = load_config(settings.config_path)
        print(f"ok   config {settings.config_path}: {len(config.profiles)} profile(s), {len(config.tools)} tool(s)")
    except ConfigError as exc:
        problems += [f"config {exc.source}: {p}" for p in exc.problems]
    problems += await _check_redis(settings)
    if config is not None:
        problems += await _check_backends(settings, config)
    problems += await _check_platforms(settings, config)
    for line in problems:
        print(f"FAIL {line}")
    print(f"{len(problems)} problem(s)" if problems else "all checks passed")
    return 1 if problems else 0


async def _check_redis(settings: Settings) -> list[str]:
    if not settings.redis_url:
        return ["redis: REDIS_URL is not set"]
    try:
        async with Store.connect(settings.redis_url):
            print("ok   redis reachable")
            return []
    except StoreUnavailable as exc:
        return [f"redis: {exc}"]


async def _check_backends(settings: Settings, config: Config) -> list[str]:
    problems: list[str] = []
    for name in sorted(used_backends(config)):
        try:
            client = make_client(name, config.backends[name], settings)
        except ConfigError as exc:
            problems += exc.problems
            continue
        async with client:
            if config.backends[name].kind == "responses":
                problems += await _check_responses_backend(name, client)
            else:
                problems += await _check_backend(name, client, config)
    return problems


async def _check_responses_backend(name: str, client: openai.AsyncOpenAI) -> list[str]:
    """A Responses server keeps no assistants: it is reachable if it answers ``GET /models`` with
    anything but an authentication error (some local servers have no such route: 404 is fine)."""
    try:
        await client.models.list()
    except (openai.NotFoundError, openai.BadRequestError):
        pass
    except openai.APIError as exc:
        return [f"backend {name}: {_describe(exc)}"]
    print(f"ok   backend {name} (responses) reachable at {client.base_url}")
    return []


async def _check_backend(name: str, client: openai.AsyncOpenAI, config: Config) -> list[str]:
    try:
        await client.beta.assistants.list(limit=1)
    except openai.APIError as exc:
        return [f"backend {name}: {_describe(exc)}"]
    print(f"ok   backend {name} reachable at {client.base_url}")
    problems = []
    for profile_name, profile in config.profiles.items():
        if profile.backend != name or profile.assistant_id is None:
            continue
        try:
            await client.beta.assistants.retrieve(profile.assistant_id)
        except openai.NotFoundError:
            problems.append(f"profiles.{profile_name}.assistant_id: {profile.assistant_id} not found on backend {name}")
        except openai.APIError as exc:
            problems.append(f"profiles.{profile_name}.assistant_id: {_describe(exc)}")
    return problems


async def _check_platforms(settings: Settings, config: Config | None) -> list[str]:
    problems: list[str] = []
    if settings.slack_enabled:
        from bots.slack import check as slack_check

        problems += await slack_check(settings)
    if settings.discord_enabled:
        from bots.discord import check as discord_check

        problems += await discord_check(settings, config)
    return problems


async def discord_sync(settings: Settings, config: Config, guild_id: int | None) -> int:
    """``switchboard discord sync [--guild ID]``: register /ask and /assistant with Discord."""
    if not settings.discord_enabled:
        raise SwitchboardError("DISCORD_BOT_TOKEN is not set")
    from bots.discord import sync_commands

    names = await sync_commands(settings, config, guild_id)
    where = f"guild {guild_id}" if guild_id else "globally (may take up to an hour to appear)"
    print(f"synced {', '.join('/' + n for n in names)} {where}")
    return 0


def _describe(exc: openai.APIError) -> str:
    if isinstance(exc, openai.AuthenticationError):
        return "the API key was refused (HTTP 401)"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} from the backend"
    return f"unreachable ({type(exc).__name__})"


async def assistants(settings: Settings, config: Config, action: str, *, dry_run: bool = False,
                     prune: bool = False) -> int:
    """``assistants sync [--dry-run] [--prune]``: make the backends' assistants match the definitions;
    ``assistants list``: page through every assistant. Only ``kind: assistants`` backends keep assistants."""
    url = _redis_url(settings)
    async with Store.connect(url) as redis:
        for name in sorted(used_backends(config)):
            if config.backends[name].kind != "assistants":
                print(f"backend {name}: kind {config.backends[name].kind}, definitions are sent with each request "
                      "(no assistants to sync or list)")
                continue
            async with make_client(name, config.backends[name], settings) as client:
                if action == "sync":
                    await _sync(name, client, config, redis, dry_run=dry_run, prune=prune)
                else:
                    await _list(name, client)
    return 0


async def _sync(name: str, client: openai.AsyncOpenAI, config: Config, redis: aioredis.Redis, *,
                dry_run: bool, prune: bool) -> None:
    catalog = AssistantCatalog(backend=name, client=client, redis=redis, keys=keys_for(config), tools=config.tools)
    mine = {p: profile for p, profile in config.profiles.items() if profile.backend == name and profile.is_definition}
    elsewhere = {p for p, profile in config.profiles.items() if profile.is_definition} - set(mine)
    fixed = {profile.assistant_id for profile in config.profiles.values() if profile.assistant_id}
    plans = await catalog.plan(mine, prune=prune, keep=elsewhere, keep_ids=fixed)
    for plan in plans:
        if dry_run:
            _print_plan(name, plan)
        else:
            result = await catalog.apply(plan)
            detail = ", ".join(c.field for c in plan.changes) if plan.action == "update" else plan.note
            print(f"{result.action:<9} {plan.profile:<20} {result.assistant_id} (backend {name})"
                  + (f": {detail}" if detail else ""))
    changes = sum(plan.action != "unchanged" for plan in plans)
    ending = "nothing was changed (dry run)" if dry_run else "done"
    print(f"backend {name}: {changes} change(s) for {len(plans)} assistant(s); {ending}")


def _print_plan(backend: str, plan: SyncPlan) -> None:
    verb = "unchanged" if plan.action == "unchanged" else f"would {plan.action}"
    note = f": {plan.note}" if plan.note else ""
    print(f"{verb:<15} {plan.profile:<20} {plan.assistant_id or '(new)'} (backend {backend}){note}")
    for change in plan.changes:
        print(f"    {change.field}: {_shown(change.field, change.old)} → {_shown(change.field, change.new)}")


def _shown(field: str, value: Any, width: int = 100) -> str:
    """A field's value on one line: tools by name, other values as JSON, cut at ``width``."""
    if value is None:
        return "–"
    if field == "tools" and isinstance(value, list):
        names = [t.get("function", {}).get("name") or t.get("type", "?") for t in value if isinstance(t, dict)]
        return "[" + ", ".join(names) + "]"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


async def _list(name: str, client: openai.AsyncOpenAI) -> None:
    count = 0
    async for assistant in client.beta.assistants.list(limit=100, order="asc"):
        tag = (assistant.metadata or {}).get(PROFILE_TAG, "")
        print(f"{assistant.id:<32} {assistant.model:<20} {assistant.name or '':<30} {tag}")
        count += 1
    print(f"{count} assistant(s) on backend {name}")


async def bindings(settings: Settings, config: Config, args: argparse.Namespace) -> int:
    """``bindings list | show | set | unset | history``; ``set``/``unset`` are audited (via ``cli``, by the OS user)."""
    async with Store.connect(_redis_url(settings)) as redis:
        keys = keys_for(config)
        store = Store(redis, keys=keys, limits=StoreLimits())
        if args.action == "list":
            _print_config_bindings(config)
            for platform, workspace, channel, profile in await store.list_bindings():
                print(f"runtime  {platform}/{workspace}/{channel:<40} {profile}")
        elif args.action == "show":
            await _show_binding(store, config, args)
        elif args.action == "history":
            history = await BindingLog(redis, keys=keys).history(platform=args.platform, workspace=args.workspace,
                                                                 limit=args.limit)
            print_history(history)
        else:
            await _change_binding(BindingLog(redis, keys=keys), config, args)
    return 0


async def _change_binding(log: BindingLog, config: Config, args: argparse.Namespace) -> None:
    chosen: str | None = getattr(args, "profile", None)
    if chosen is not None and chosen not in config.profiles:
        raise SwitchboardError(f"unknown profile {chosen!r}; known: {', '.join(config.profiles)}")
    where = f"{args.platform}/{args.workspace}/{args.channel}"
    change = await log.change(platform=args.platform, workspace=args.workspace, channel=args.channel, profile=chosen,
                              actor=os_user(), via="cli")
    if change is None:
        print(f"unchanged {where}" + (f" → {chosen}" if chosen else " (no run-time binding)"))
    else:
        print(f"{args.action} {where}: {change.old or '(none)'} → {change.new or '(none)'}")


async def _show_binding(store: Store, config: Config, args: argparse.Namespace) -> None:
    place = Place(platform=args.platform, workspace=args.workspace, channel=args.channel, user="cli")
    binding = await BindingResolver(store=store, config=config).resolve(place)
    print(f"{args.platform}/{args.workspace}/{args.channel}: {binding.profile} ({binding.source} binding, "
          f"from {'an admin' if binding.origin == 'runtime' else 'the config file'})")


def print_history(history: list[BindingChange]) -> None:
    """The audit trail, oldest first: when, where, old → new, who, how."""
    for change in history:
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(change.at))
        print(f"{when}  {change.where:<40} {change.old or '(none)':>12} → {change.new or '(none)':<12} "
              f"by {change.actor} via {change.via}")
    print(f"{len(history)} change(s)")


def os_user() -> str:
    """Who runs the CLI, for the audit trail."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def _print_config_bindings(config: Config) -> None:
    print(f"config   {'global default':<50} {config.default_profile()}")
    for platform in ("slack", "discord", "console"):
        for workspace, channels in getattr(config.bindings, platform).items():
            for channel, profile in channels.items():
                print(f"config   {platform}/{workspace}/{channel:<40} {profile}")


def _redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise StoreUnavailable("REDIS_URL is not set")
    return settings.redis_url
