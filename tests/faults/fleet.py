"""Real gateway processes for the fault suite, and what surrounds them in production.

- ``Fleet``: ``python -m switchboard run`` processes (Slack in HTTP mode, the Assistants emulator
  as backend, one Redis), kept at a given size like an orchestrator would: a process that was
  killed or stopped is replaced by a new one.
- ``Fleet.deliver``: Slack's side of event delivery through a load balancer: POST a signed event
  to a ready process; a refused or failed delivery (connection reset, 5xx) is delivered again,
  marked as a retry, to another process.
- ``RecordingSlack``: the Slack emulator, noting when each bot message reached each text.
- ``ToolServer``: tool endpoints that are slow or never answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import free_port
from tests.emulators.slack import Args, SlackEmulator

REPO = Path(__file__).resolve().parents[2]
SLOW_TOOL_S = 1.5
MIN_UPTIME_S = 3.0
HANG_TOOL_TIMEOUT_S = 1.0


class RecordingSlack(SlackEmulator):
    """``SlackEmulator`` that keeps, per bot message, each text it showed and when (monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[tuple[float, str]]] = {}

    async def _dispatch(self, method: str, args: Args) -> Args:
        body = await super()._dispatch(method, args)
        ts = str(body.get("ts") or args.get("ts") or "")
        message = self.messages.get(ts)
        if message is not None and method.startswith("chat."):
            self.history.setdefault(ts, []).append((time.monotonic(), message.text))
        return body

    def first_shown(self, ts: str, text: str) -> float | None:
        return next((at for at, shown in self.history.get(ts, []) if shown == text), None)


class ToolServer:
    """``POST /slow`` answers after ``SLOW_TOOL_S``; ``POST /hang`` never answers in time."""

    def __init__(self) -> None:
        self.base_url = ""
        self.calls: dict[str, int] = {"slow": 0, "hang": 0}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{kind}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        body = await request.json()
        self.calls[kind] = self.calls.get(kind, 0) + 1
        wait_s = SLOW_TOOL_S if kind == "slow" else 30.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), wait_s)
        return web.json_response({"output": f"{kind} ok {body['arguments'].get('n', '?')}"})


def fleet_config(*, tools_base: str, lease_ttl_s: float, grace_s: float) -> str:
    """The gateways' YAML: one profile on the default (emulator) backend, with slow and hanging tools."""
    tool = {"type": "object", "properties": {"n": {"type": "string"}}}
    config = {
        # No SDK retries: every 429/500 burst meets the gateway's own retries (backoff, resume).
        "backends": {"default": {"kind": "assistants", "max_retries": 0, "timeout_s": 20}},
        "tools": {
            "slow_tool": {"url": f"{tools_base}/slow", "timeout_s": 10, "parameters": tool},
            "hang_tool": {"url": f"{tools_base}/hang", "timeout_s": HANG_TOOL_TIMEOUT_S, "parameters": tool},
        },
        "profiles": {"helper": {"model": "emulator-1", "instructions": "Be helpful.",
                                "tools": ["slow_tool", "hang_tool"]}},
        "bindings": {"default": "helper"},
        "gateway": {"lease_ttl_s": lease_ttl_s, "run_timeout_s": 90, "shutdown_grace_s": grace_s},
    }
    return json.dumps(config)  # YAML is a superset of JSON


class GatewayDidNotStart(RuntimeError):
    pass


@dataclass
class Gateway:
    number: int
    port: int
    proc: asyncio.subprocess.Process
    log_path: Path
    ready: bool = False
    ready_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


@dataclass
class Fleet:
    """Keeps ``size`` gateway processes running; faults kill or stop them, replacements follow."""

    size: int
    env: dict[str, str]
    workdir: Path
    slack: RecordingSlack
    gateways: list[Gateway] = field(default_factory=list)
    exit_codes: list[tuple[str, int]] = field(default_factory=list)
    _started: int = 0
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        await asyncio.gather(*(self._spawn() for _ in range(self.size)))

    async def stop(self) -> None:
        """SIGTERM every process (graceful drain) and wait; a process that needs SIGKILL is noted."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._terminate(g, note="final") for g in self.gateways if g.alive))
        if self._session is not None:
            await self._session.close()

    def live(self) -> list[Gateway]:
        return [g for g in self.gateways if g.alive and g.ready]

    # --- faults ---------------------------------------------------------------------------------

    def _victims(self) -> list[Gateway]:
        """Processes that may be stopped now: only while the fleet is at full strength (it has
        recovered from the last fault), and only ones that have worked a while (on a busy machine
        a process could otherwise be killed as soon as it comes up, again and again)."""
        live = self.live()
        if len(live) < self.size:
            return []
        return [g for g in live if time.monotonic() - g.ready_at >= MIN_UPTIME_S]

    async def kill9(self) -> Gateway | None:
        """``kill -9`` a random process that is working; a replacement starts shortly after."""
        victims = self._victims()
        if not victims:
            return None
        victim = random.choice(victims)
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()
        self._replace_later()
        return victim

    async def sigterm(self) -> Gateway | None:
        """Stop a random process gracefully (it drains and hands its work back); replaced like a kill."""
        victims = self._victims()
        if not victims:
            return None
        victim = random.choice(victims)
        victim.ready = False
        self._track(self._terminate(victim, note="sigterm"))
        self._replace_later()
        return victim

    def _replace_later(self) -> None:
        self._track(self._replace())

    async def _replace(self) -> None:
        """Start a new process like an orchestrator's restart policy: again until one comes up
        (a process exits at once while Redis is down)."""
        while True:
            await asyncio.sleep(random.uniform(0.3, 1.0))
            try:
                await self._spawn()
                return
            except GatewayDidNotStart:
                continue

    def _track(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _terminate(self, gateway: Gateway, *, note: str) -> None:
        gateway.ready = False
        if gateway.alive:
            gateway.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(gateway.proc.wait(), 30)
        except TimeoutError:
            gateway.proc.kill()
            code = await gateway.proc.wait()
            note += "+sigkill"
        self.exit_codes.append((f"{note}:{gateway.number}", code))

    # --- processes --------------------------------------------------------------------------------

    async def _spawn(self) -> Gateway:
        self._started += 1
        number, port = self._started, free_port()
        log_path = self.workdir / f"gateway-{number}.log"
        env = {**self.env, "SWITCHBOARD_PORT": str(port)}
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "switchboard", "run", cwd=REPO, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=log)
        gateway = Gateway(number, port, proc, log_path)
        self.gateways.append(gateway)
        await self._wait_ready(gateway)
        return gateway

    async def _wait_ready(self, gateway: Gateway, timeout_s: float = 30.0) -> None:
        assert self._session is not None
        deadline = time.monotonic() + timeout_s
        while gateway.alive and time.monotonic() < deadline:
            try:
                async with self._session.get(f"{gateway.url}/readyz") as response:
                    if response.status == 200:
                        gateway.ready, gateway.ready_at = True, time.monotonic()
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        if gateway.alive:
            gateway.proc.kill()
            await gateway.proc.wait()
        tail = gateway.log_path.read_text(errors="replace")[-3000:]
        raise GatewayDidNotStart(f"gateway {gateway.number} did not become ready:\n{tail}")

    # --- Slack's side -------------------------------------------------------------------------------

    async def deliver(self, payload: dict[str, Any], *, deadline_s: float = 60.0, retry_num: int | None = None,
                      ) -> tuple[float, int]:
        """Deliver until one process acknowledges (HTTP 200); returns (ack time, deliveries made)."""
        deadline = time.monotonic() + deadline_s
        attempts = 0
        while True:
            targets = self.live()
            if targets:
                attempts += 1
                target = random.choice(targets)
                retry = retry_num if retry_num is not None else (attempts - 1 or None)
                try:
                    delivery = await self.slack.deliver(f"{target.url}/slack/events", payload, retry_num=retry,
                                                        retry_reason="http_error" if retry else None)
                    if delivery.status == 200:
                        return time.monotonic(), attempts
                except (aiohttp.ClientError, TimeoutError):
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no gateway acknowledged event {payload.get('event_id')}")
            await asyncio.sleep(random.uniform(0.1, 0.4))


def fleet_env(*, config_path: Path, redis_url: str, backend_url: str, slack: SlackEmulator) -> dict[str, str]:
    drop = ("REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
            "SLACK_SIGNING_SECRET", "DISCORD_BOT_TOKEN", "SWITCHBOARD_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(SWITCHBOARD_CONFIG=str(config_path), REDIS_URL=redis_url, OPENAI_BASE_URL=backend_url,
               OPENAI_API_KEY="fault-suite", SLACK_BOT_TOKEN=slack.bot_token,
               SLACK_SIGNING_SECRET=slack.signing_secret, SLACK_API_URL=slack.base_url,
               SWITCHBOARD_HOST="127.0.0.1", SWITCHBOARD_LOG_FORMAT="json")
    return env
