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

import aiohttp
import redis.asyncio as aioredis

import core.store
from bench.load import BenchSlack, Sender, Tracker
from bench.meter import Meter
from bench.procs import Child, Children, ProxyControl, free_port, start_redis, wait_for_port, wait_until_ready

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
    assistants: RemoteAssistants
    tracker: Tracker
    sender: Sender
    meter: Meter


def script_labels() -> dict[str, str]:
    """SHA1 -> name of core.store's Lua scripts (``_ACCEPT`` -> ``accept``), as ``EVALSHA`` names them."""
    return {hashlib.sha1(value.encode()).hexdigest(): name.strip("_").lower()
            for name, value in vars(core.store).items() if isinstance(value, str) and "redis.call" in value}


@dataclass
class RemoteAssistants:
    """The Assistants emulator in a process of its own (``python -m core.emulator``): in the harness's
    process it competed with the Slack emulator and the sender for one core and became the bottleneck."""

    child: Child
    base_url: str

    @classmethod
    async def start(cls, children: Children, options: SystemOptions, workdir: Path) -> RemoteAssistants:
        port = free_port()
        argv = [sys.executable, "-m", "core.emulator", "--port", str(port), "--chunks", str(options.chunks),
                "--latency-s", str(options.latency_s)]
        child = await children.start("assistants-emulator", argv, log=workdir / "assistants.log")
        await wait_for_port(child, port)
        return cls(child, f"http://127.0.0.1:{port}/v1")

    async def runs(self) -> list[tuple[str, float]]:
        """Every run's prompt and scripted backend seconds (the emulator's ``/_emulator/runs``)."""
        async with aiohttp.ClientSession() as session, session.get(self.base_url.removesuffix("/v1")
                                                                   + "/_emulator/runs") as response:
            response.raise_for_status()
            return [(run["prompt"], float(run["backend_s"])) for run in await response.json()]


def gateway_env(*, slack: BenchSlack, assistants: RemoteAssistants, redis_url: str, config: Path,
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
            assistants = await RemoteAssistants.start(children, options, workdir)
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
                                 sender, Meter(gateway_pid=gateway.pid, redis=redis, proxy=proxy,
                                                   emulator_pid=assistants.child.pid))
            finally:
                await gateway.stop(timeout_s=30)
        finally:
            await slack.stop()
            await redis.aclose()
