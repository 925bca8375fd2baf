"""Two real ``switchboard run`` processes (Slack in HTTP mode) on one Redis, the Slack and Assistants
emulators in the test process: a rate limit holds across the processes, and SIGHUP reloads the config
of the process that gets it (an invalid file is refused, with its problems in the log)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from redis.asyncio import Redis

from core.emulator.assistants import AssistantsEmulator
from tests.conftest import RedisServer, free_port
from tests.emulators.slack import Message, SlackEmulator
from tests.integration.test_cli import REPO, clean_env
from tests.integration.test_slack_adapter import wait_until

C = "C0GENERAL"
CONFIG = {
    "profiles": {"helper": {"model": "emulator-1", "instructions": "Be helpful.",
                            "rate_limit": {"per_user": "2/minute"}}},
    "gateway": {"config_poll_s": 0},  # reload on SIGHUP only: the test says which process reloads
}


@dataclass
class Gateway:
    proc: asyncio.subprocess.Process
    port: int
    log: list[dict[str, Any]] = field(default_factory=list)
    """The process's JSON log lines, read as they come (a full pipe would stall it)."""

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    async def read_log(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            if line.startswith(b"{"):
                self.log.append(json.loads(line))


@contextlib.asynccontextmanager
async def gateway_process(env: dict[str, str]) -> AsyncIterator[Gateway]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "run", cwd=REPO, env={**env, "SWITCHBOARD_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    gateway = Gateway(proc, port)
    reader = asyncio.create_task(gateway.read_log())
    try:
        await _ready(gateway)
        yield gateway
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        await reader


async def _ready(gateway: Gateway) -> None:
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as http:
        for _ in range(200):
            with contextlib.suppress(httpx2.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            assert gateway.proc.returncode is None, "switchboard run exited"
            await asyncio.sleep(0.05)
    raise AssertionError("switchboard run did not become ready")


async def command(emu: SlackEmulator, gateway: Gateway, text: str) -> str:
    delivery = await emu.deliver(gateway.events_url, emu.slash_command(text=text, channel=C), form=True)
    assert delivery.status == 200, delivery
    return str(json.loads(delivery.body)["text"])


async def mention(emu: SlackEmulator, gateway: Gateway, text: str) -> str:
    event = emu.mention_event(text=text, channel=C)
    assert (await emu.deliver(gateway.events_url, emu.event_callback(event))).status == 200
    return str(event["ts"])


def write(path: Path, content: object) -> None:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))


@pytest.fixture
async def processes(tmp_path: Path, redis_server: RedisServer, redis_client: Redis
                    ) -> AsyncIterator[tuple[SlackEmulator, AssistantsEmulator, Gateway, Gateway, Path]]:
    config = tmp_path / "switchboard.yaml"
    write(config, CONFIG)
    emu = SlackEmulator()
    await emu.start()
    try:
        async with AssistantsEmulator() as assistants:
            env = clean_env(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url, SWITCHBOARD_HOST="127.0.0.1",
                            OPENAI_BASE_URL=assistants.base_url, OPENAI_API_KEY="k", SLACK_API_URL=emu.base_url,
                            SLACK_BOT_TOKEN=emu.bot_token, SLACK_SIGNING_SECRET=emu.signing_secret,
                            SWITCHBOARD_LOG_FORMAT="json")
            async with gateway_process(env) as first, gateway_process(env) as second:
                yield emu, assistants, first, second, config
    finally:
        await emu.stop()


async def test_rate_limit_across_processes_and_sighup_reload(
        processes: tuple[SlackEmulator, AssistantsEmulator, Gateway, Gateway, Path]) -> None:
    emu, assistants, first, second, config = processes
    answered = [await mention(emu, first, "one"), await mention(emu, second, "two")]
    refused = await mention(emu, first, "three")

    def thread(ts: str) -> list[Message]:
        return emu.bot_messages(C, ts)

    def settled() -> bool:
        return all(thread(ts) and not thread(ts)[0].streaming for ts in answered) and bool(thread(refused))

    await wait_until(settled)
    [notice] = thread(refused)
    assert notice.text.startswith("You're sending messages faster than this assistant allows (2 per minute")
    assert len(assistants.state.runs) == 2

    write(config, {**CONFIG, "profiles": {**CONFIG["profiles"], "ops": {"model": "m", "description": "Ops"}}})
    first.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: any(e.get("event") == "config_reloaded" for e in first.log))
    assert "`ops` — Ops" in await command(emu, first, "list")
    assert "`ops`" not in await command(emu, second, "list")  # it got no signal (and watches no file)

    write(config, "profiles:\n  helper: {model: m, temperature: 7}\n")
    first.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: any(e.get("event") == "config_reload_refused" for e in first.log))
    [refusal] = [e for e in first.log if e.get("event") == "config_reload_refused"]
    assert refusal["problems"] == ["profiles.helper.temperature: Input should be less than or equal to 2"]
    assert "profiles.helper.temperature" in refusal["msg"]
    assert "`ops` — Ops" in await command(emu, first, "list")  # the invalid file changed nothing
