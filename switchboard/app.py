"""Composition root: builds core and the platform adapters and runs them (run, console, demo)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import secrets
import signal
import sys
from collections.abc import AsyncIterator

from pydantic import SecretStr

from bots.console import ConsoleAdapter, stdin_reader
from core.config import Config, parse_config
from core.demo_tool import DemoToolServer
from core.emulator.assistants import AssistantsEmulator
from core.httpserver import HttpServer, platform_check, redis_check
from core.ports import PlatformAdapter
from core.reload import ConfigReloader
from core.runtime import Runtime, open_runtime
from core.settings import Settings
from switchboard.localredis import local_redis

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 20.0
"""The default of ``gateway.shutdown_grace_s``, which ``switchboard run`` uses."""
CONSOLE_GRACE_S = 5.0


class MissingRedis(RuntimeError):
    pass


def require_redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise MissingRedis(
            "REDIS_URL is not set (e.g. redis://localhost:6379/0); `switchboard demo` starts one for you")
    return settings.redis_url


def platform_adapters(runtime: Runtime) -> list[PlatformAdapter]:
    """An adapter for every platform whose credentials are set."""
    adapters: list[PlatformAdapter] = []
    settings = runtime.settings
    if settings.slack_enabled:
        from bots.slack import SlackAdapter

        adapters.append(SlackAdapter(gateway=runtime.gateway, settings=settings, config=runtime.config))
    if settings.discord_enabled:
        from bots.discord import DiscordAdapter

        adapters.append(DiscordAdapter(gateway=runtime.gateway, settings=settings, config=runtime.config))
    return adapters


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on Windows' default loop
            loop.add_signal_handler(sig, stop.set)


def _reload_on_sighup(reloader: ConfigReloader) -> None:
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    if hangup is not None:
        asyncio.get_running_loop().add_signal_handler(hangup, reloader.request)


async def run_gateway(settings: Settings, config: Config) -> None:
    """``switchboard run``: every configured platform, the HTTP server and the workers."""
    async with open_runtime(settings, config, redis_url=require_redis_url(settings)) as runtime:
        adapters = platform_adapters(runtime)
        if not adapters:
            log.warning("no platform credentials set (SLACK_BOT_TOKEN, DISCORD_BOT_TOKEN): serving HTTP only")
        checks = [redis_check(runtime.store)] + [platform_check(a.name, a.ready) for a in adapters]
        server = HttpServer(settings.host, settings.port, checks,
                            routes=[r for a in adapters for r in a.routes()])
        stop = asyncio.Event()
        _stop_on_signals(stop)
        reloader = ConfigReloader(settings.config_path, current=lambda: runtime.config, apply=runtime.apply_config,
                                  running_backends=runtime.backends.backends)
        _reload_on_sighup(reloader)
        await server.start()
        try:
            async with asyncio.TaskGroup() as group:
                worker = group.create_task(runtime.worker.run(), name="worker")
                group.create_task(reloader.run(), name="config-reload")
                for adapter in adapters:
                    await adapter.start()
                # Everything loaded so far (modules, SDK models, config) lives as long as the process:
                # keep it out of the cyclic GC's full collections, which otherwise walk it all
                # every so often and stall the loop (the p99 of answer latency under load).
                gc.freeze()
                log.info("gateway running", extra={"event": "started", "platforms": [a.name for a in adapters]})
                await stop.wait()
                reloader.stop()
                log.info("shutting down", extra={"event": "stopping"})
                # Answers in flight get the grace period; the rest is handed to other processes at once.
                await runtime.worker.drain(runtime.config.gateway.shutdown_grace_s)
                await worker
        finally:
            for adapter in adapters:
                await asyncio.shield(adapter.stop())
            await server.stop()


async def run_console(settings: Settings, config: Config, *, profile: str | None, redis_url: str) -> None:
    """``switchboard console``: chat with a profile from the terminal, through the same core."""
    async with open_runtime(settings, config, redis_url=redis_url) as runtime:
        console = ConsoleAdapter(gateway=runtime.gateway, profile=profile)
        await console.start()
        worker = asyncio.create_task(runtime.worker.run(), name="worker")
        try:
            await console.chat(await stdin_reader())
        finally:
            await runtime.worker.drain(CONSOLE_GRACE_S)
            await worker


DEMO_BACKENDS = ("assistants", "responses")


def demo_config(*, tool_url: str, tool_secret: str, model: str, backend: str = "assistants") -> Config:
    """The demo's one profile, on the Assistants API (``default``) or the Responses API with Conversations."""
    backends = {"responses": {"kind": "responses", "state": "conversations"}} if backend == "responses" else {}
    return parse_config({
        "backends": backends,
        "tools": {"get_weather": {
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]},
            "url": tool_url, "timeout_s": 10, "secret": tool_secret,
        }},
        "profiles": {"demo": {
            "backend": "responses" if backend == "responses" else "default", "model": model,
            "name": "Switchboard demo",
            "instructions": "You are Switchboard's demo assistant. Use get_weather for weather questions.",
            "tools": ["get_weather"],
        }},
        "bindings": {"default": "demo"},
        "gateway": {"lease_ttl_s": 10},
    }, source="(demo config)", env={})


@contextlib.asynccontextmanager
async def _demo_redis(settings: Settings) -> AsyncIterator[str]:
    if settings.redis_url:
        print(f"• Redis: {settings.redis_url.split('@')[-1]} (from REDIS_URL)")
        yield settings.redis_url
        return
    async with local_redis() as url:
        print(f"• Redis: started a private redis-server at {url}")
        yield url


@contextlib.asynccontextmanager
async def _demo_backend(settings: Settings, backend: str) -> AsyncIterator[Settings]:
    api = "Responses API (with Conversations)" if backend == "responses" else "Assistants API"
    if settings.openai_api_key is not None:
        where = settings.openai_base_url or "OpenAI's API"
        print(f"• Assistant backend: the {api} at {where} (OPENAI_API_KEY is set)")
        yield settings
        return
    async with AssistantsEmulator(chunks=12, latency_s=0.05) as emulator:
        print(f"• Assistant backend: the local {api} emulator at {emulator.base_url}\n"
              "  (scripted replies; set OPENAI_API_KEY to use a real backend)")
        yield settings.model_copy(update={"openai_base_url": emulator.base_url,
                                          "openai_api_key": SecretStr("emulator")})


async def run_demo(settings: Settings, *, model: str, backend: str = "assistants") -> None:
    """``switchboard demo``: Redis, a signed sample tool, the emulator unless a key is set, and the console.
    ``backend`` is ``assistants`` or ``responses`` (the emulator serves both)."""
    print("Switchboard demo — everything runs on this machine.")
    tool_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    async with _demo_redis(settings) as redis_url, DemoToolServer(secret=tool_secret) as tool, \
            _demo_backend(settings, backend) as backend_settings:
        print(f"• Tool endpoint: get_weather → {tool.url} (Standard Webhooks signed)")
        print("Try: “hello”, then “what's the weather in Paris?”\n")
        sys.stdout.flush()
        config = demo_config(tool_url=tool.url, tool_secret=tool_secret, model=model, backend=backend)
        await run_console(backend_settings, config, profile="demo", redis_url=redis_url)
