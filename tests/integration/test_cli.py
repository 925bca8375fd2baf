"""The ``switchboard`` command as a user runs it: real processes, real Redis, the emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from core.emulator.assistants import AssistantsEmulator
from tests.conftest import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
            "SLACK_SIGNING_SECRET", "DISCORD_BOT_TOKEN", "SWITCHBOARD_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


async def switchboard(*args: str, env: dict[str, str], stdin: bytes | None = None,
                      timeout_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", *args, cwd=REPO, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


GOOD_CONFIG = """
tools:
  get_weather:
    url: http://127.0.0.1:9/weather
profiles:
  helper:
    model: emulator-1
    instructions: Be brief.
    tools: [get_weather]
  fixed:
    assistant_id: {assistant_id}
bindings:
  default: helper
"""


@pytest.fixture
async def emulator() -> AsyncIterator[AssistantsEmulator]:
    async with AssistantsEmulator() as emu:
        yield emu


async def test_demo_answers_and_calls_the_tool() -> None:
    code, out, err = await switchboard(
        "demo", env=clean_env(), stdin=b"hello\nwhat's the weather in Paris?\n/quit\n")
    assert code == 0, err
    assert "local Assistants API emulator" in out
    assert "[emulator] You said: hello (message 1 in this thread)" in out
    assert "tool get_weather" in out and '"location": "Paris"' in out
    assert "[emulator] The tool said:" in out


async def test_check_lists_every_config_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("profiles:\n  a: {backend: nowhere, tools: [ghost], temperature: 9}\n"
                      "bindings: {default: missing}\ntools: {t: {url: 'ftp://x'}}\n")
    code, out, _ = await switchboard("check", env=clean_env(SWITCHBOARD_CONFIG=str(config)))
    assert code == 1
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    joined = "\n".join(failures)
    for needle in ("profiles.a.temperature", "tools.t.url", "REDIS_URL is not set"):
        assert needle in joined, joined
    assert len(failures) >= 3


async def test_check_passes_against_reachable_dependencies(
    tmp_path: Path, redis_server: RedisServer, emulator: AssistantsEmulator,
) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=emulator.base_url, api_key="k") as client:
        assistant = await client.beta.assistants.create(model="m")
    config = tmp_path / "good.yaml"
    config.write_text(GOOD_CONFIG.format(assistant_id=assistant.id))
    env = clean_env(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url,
                    OPENAI_BASE_URL=emulator.base_url, OPENAI_API_KEY="sk-test-secret-value")
    code, out, err = await switchboard("check", env=env)
    assert code == 0, out + err
    assert "all checks passed" in out
    assert "sk-test-secret-value" not in out + err

    config.write_text(GOOD_CONFIG.format(assistant_id="asst_missing"))
    code, out, _ = await switchboard("check", env=env)
    assert code == 1 and "profiles.fixed.assistant_id: asst_missing not found" in out


async def test_check_a_responses_backend_without_assistants(
    tmp_path: Path, redis_server: RedisServer, emulator: AssistantsEmulator,
) -> None:
    config = tmp_path / "responses.yaml"
    config.write_text("backends:\n  local: {kind: responses, state: replay}\n"
                      "profiles:\n  chat: {backend: local, model: m}\n")
    env = clean_env(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url,
                    OPENAI_BASE_URL=emulator.base_url, OPENAI_API_KEY="k")
    code, out, err = await switchboard("check", env=env)
    assert code == 0, out + err
    assert "backend local (responses) reachable" in out
    assert not [r for r in emulator.state.requests if "/assistants" in r.path]


async def test_console_with_unreachable_redis_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(GOOD_CONFIG.format(assistant_id="asst_1"))
    env = clean_env(SWITCHBOARD_CONFIG=str(config), REDIS_URL="redis://:hunter2secret@127.0.0.1:1/0",
                    OPENAI_API_KEY="k")
    code, _out, err = await switchboard("console", env=env, stdin=b"")
    assert code == 3
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach Redis" in lines[0]
    assert "hunter2secret" not in err


async def test_bindings_set_list_unset(tmp_path: Path, redis_server: RedisServer, redis_client: object) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(GOOD_CONFIG.format(assistant_id="asst_1"))
    env = clean_env(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url)
    code, out, _ = await switchboard("bindings", "set", "slack", "T1", "C1", "--profile", "fixed", env=env)
    assert code == 0, out
    code, out, _ = await switchboard("bindings", "list", env=env)
    assert "slack/T1/C1" in out and "fixed" in out
    code, out, err = await switchboard("bindings", "set", "slack", "T1", "C1", "--profile", "nope", env=env)
    assert code == 2 and "unknown profile" in err
    code, _, _ = await switchboard("bindings", "unset", "slack", "T1", "C1", env=env)
    code, out, _ = await switchboard("bindings", "list", env=env)
    assert "slack/T1/C1" not in out


async def test_run_serves_health_readiness_and_metrics(
    tmp_path: Path, redis_server: RedisServer, emulator: AssistantsEmulator,
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(GOOD_CONFIG.format(assistant_id="asst_1"))
    port = free_port()
    env = clean_env(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url, OPENAI_API_KEY="k",
                    OPENAI_BASE_URL=emulator.base_url, SWITCHBOARD_PORT=str(port), SWITCHBOARD_HOST="127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "run", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    health = await http.get("/healthz")
                    break
                except httpx2.TransportError:
                    await asyncio.sleep(0.1)
            assert health.status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {"redis": True}
            metrics = (await http.get("/metrics")).text
            assert "switchboard_runs" in metrics and "switchboard_queue_depth" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
