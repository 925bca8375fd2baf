"""The system under test, started and stopped as one: Redis (+ counting proxy), the Slack and Assistants
emulators (in the harness's process) and one ``switchboard run`` process in Slack HTTP mode."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

import core.store
from bench.load import BenchSlack, Sender, Tracker
from bench.meter import Meter
from bench.procs import Child, Children, ProxyControl, free_port, start_redis, wait_until_ready
from core.emulator.assistants import AssistantsEmulator

BENCH_CONFIG = """\
# Written by bench/: one profile that the Assistants emulator answers.
profiles:
  bench:
    model: emulator-1
    instructions: Answer briefly.
bindings:
  default: bench
gateway:
  max_concurrent_runs: {max_runs}
"""

# Variables of the harness's own environment the gateway must not inherit.
_SCRUB = ("REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
          "SLACK_SIGNING_SECRET", "SLACK_API_URL", "DISCORD_BOT_TOKEN", "SWITCHBOARD_CONFIG", "SWITCHBOARD_PORT",
          "SWITCHBOARD_HOST")


@dataclass(frozen=True)
class SystemOptions:
    latency_s: float = 0.0
    chunks: int = 8
    direct_redis: bool = False
    max_concurrent_runs: int = 256


@dataclass
class System:
    options: SystemOptions
    children: Children
    gateway: Child
    redis: aioredis.Redis
    redis_version: str
    proxy: ProxyControl | None
    slack: BenchSlack
    assistants: AssistantsEmulator
    tracker: Tracker
    sender: Sender
    meter: Meter


def script_labels() -> dict[str, str]:
    """SHA1 -> name of core.store's Lua scripts (``_ACCEPT`` -> ``accept``), as ``EVALSHA`` names them."""
    return {hashlib.sha1(value.encode()).hexdigest(): name.strip("_").lower()
            for name, value in vars(core.store).items() if isinstance(value, str) and "redis.call" in value}


def gateway_env(*, slack: BenchSlack, assistants: AssistantsEmulator, redis_url: str, config: Path,
                port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(
        SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=slack.signing_secret, SLACK_API_URL=slack.base_url,
        OPENAI_BASE_URL=assistants.base_url, OPENAI_API_KEY="bench", REDIS_URL=redis_url,
        SWITCHBOARD_CONFIG=str(config), SWITCHBOARD_PORT=str(port), SWITCHBOARD_HOST="127.0.0.1",
        SWITCHBOARD_LOG_FORMAT="json",
    )
    return env


@contextlib.asynccontextmanager
async def running_system(options: SystemOptions, workdir: Path) -> AsyncIterator[System]:
    """Start everything; stop everything on the way out (the gateway first, Redis last), whatever happened."""
    tracker = Tracker()
    async with Children() as children:
        _, redis_port = await start_redis(children, workdir)
        proxy = None
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        if not options.direct_redis:
            proxy = await ProxyControl.start(children, redis_port)
            for sha, name in script_labels().items():
                await proxy.ask(f"label {sha} {name}")
            redis_url = f"redis://127.0.0.1:{proxy.port}/0"
        redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis_port}/0", decode_responses=True)
        slack = BenchSlack(tracker)
        try:
            async with AssistantsEmulator(chunks=options.chunks, latency_s=options.latency_s) as assistants:
                await slack.start()
                config = workdir / "bench.yaml"
                config.write_text(BENCH_CONFIG.format(max_runs=options.max_concurrent_runs))
                port = free_port()
                env = gateway_env(slack=slack, assistants=assistants, redis_url=redis_url, config=config, port=port)
                gateway = await children.start("gateway", [sys.executable, "-m", "switchboard", "run"],
                                               log=workdir / "gateway.log", env=env)
                try:
                    await wait_until_ready(gateway, f"http://127.0.0.1:{port}/readyz")
                    version = str((await redis.info("server"))["redis_version"])
                    async with Sender(slack, f"http://127.0.0.1:{port}/slack/events", tracker) as sender:
                        yield System(options, children, gateway, redis, version, proxy, slack, assistants, tracker,
                                     sender, Meter(gateway_pid=gateway.pid, redis=redis, proxy=proxy))
                finally:
                    await gateway.stop(timeout_s=30)
        finally:
            await slack.stop()
            await redis.aclose()
