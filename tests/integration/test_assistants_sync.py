"""``switchboard assistants sync [--dry-run] [--prune] | list`` against the Assistants API emulator,
through the real ``openai`` SDK, with the assistant-ID cache in a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from pydantic import SecretStr
from redis.asyncio import Redis

from core.backends.catalog import DIGEST_TAG, PROFILE_TAG, covers
from core.config import Config, parse_config
from core.emulator.assistants import AssistantsEmulator
from core.settings import Settings
from switchboard import admin
from tests.conftest import RedisServer

TOOLS = {
    "get_weather": {"description": "Weather for a city", "url": "http://127.0.0.1:9/w",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    "search": {"url": "http://127.0.0.1:9/s"},
}


def config(**helper: Any) -> Config:
    """Two definitions (``helper`` takes overrides), a fixed assistant and a responses-backend definition."""
    base = {"model": "gpt-x", "instructions": "Be helpful.", "tools": ["get_weather"], "name": "Helper",
            "description": "Answers", "temperature": 0.2, "top_p": 0.9, "reasoning_effort": "low",
            "response_format": {"type": "json_object"}, "metadata": {"team": "support"},
            "builtin_tools": [{"type": "file_search"}],
            "tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}}}
    return parse_config({
        "backends": {"r": {"kind": "responses"}},
        "tools": TOOLS,
        "profiles": {"helper": {**base, **helper}, "ops": {"model": "gpt-y"},
                     "fixed": {"assistant_id": "asst_fixed"}, "planner": {"backend": "r", "model": "m"}},
    }, source="t", env={})


@pytest.fixture
async def emulator() -> AsyncIterator[AssistantsEmulator]:
    async with AssistantsEmulator() as emu:
        yield emu


@pytest.fixture
def settings(emulator: AssistantsEmulator, redis_server: RedisServer, redis_client: Redis) -> Settings:
    return Settings(OPENAI_BASE_URL=emulator.base_url, OPENAI_API_KEY=SecretStr("k"), REDIS_URL=redis_server.url)


def tagged(emulator: AssistantsEmulator) -> dict[str, dict[str, Any]]:
    return {a["metadata"][PROFILE_TAG]: a for a in emulator.state.assistants.values()
            if PROFILE_TAG in (a.get("metadata") or {})}


def writes(emulator: AssistantsEmulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests if r.method != "GET"]


async def sync(settings: Settings, conf: Config, capsys: pytest.CaptureFixture[str], **flags: bool) -> str:
    assert await admin.assistants(settings, conf, "sync", **flags) == 0
    return capsys.readouterr().out


async def test_sync_creates_every_field_then_changes_nothing(
        settings: Settings, emulator: AssistantsEmulator, redis_client: Redis,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = await sync(settings, config(), capsys)
    assert "created   helper" in out and "created   ops" in out
    assert "backend r: kind responses" in out  # definitions there are sent per request
    helper = tagged(emulator)["helper"]
    assert {k: helper[k] for k in ("name", "description", "model", "instructions", "temperature", "top_p",
                                   "reasoning_effort", "response_format", "tool_resources")} == {
        "name": "Helper", "description": "Answers", "model": "gpt-x", "instructions": "Be helpful.",
        "temperature": 0.2, "top_p": 0.9, "reasoning_effort": "low", "response_format": {"type": "json_object"},
        "tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}}}
    assert helper["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                          "parameters": TOOLS["get_weather"]["parameters"]}},
        {"type": "file_search"}]
    assert helper["metadata"]["team"] == "support" and helper["metadata"][DIGEST_TAG]
    assert await redis_client.hget("sb:assistant:default:helper", "id") == helper["id"]
    assert len(writes(emulator)) == 2

    again = await sync(settings, config(), capsys)
    assert len(writes(emulator)) == 2, "a second sync must not write"
    assert "unchanged helper" in again and "0 change(s) for 2 assistant(s)" in again


async def test_dry_run_prints_the_field_diff_and_changes_nothing(
        settings: Settings, emulator: AssistantsEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    await sync(settings, config(), capsys)
    before = {k: dict(v) for k, v in emulator.state.assistants.items()}
    out = await sync(settings, config(instructions="Be brief.", temperature=0.5, tools=["get_weather", "search"]),
                     capsys, dry_run=True)
    assert len(writes(emulator)) == 2
    assert emulator.state.assistants == before
    lines = out.splitlines()
    assert any(line.startswith("would update    helper") for line in lines), out
    assert '    instructions: "Be helpful." → "Be brief."' in lines
    assert "    temperature: 0.2 → 0.5" in lines
    assert "    tools: [get_weather, file_search] → [get_weather, search, file_search]" in lines
    assert any(line.startswith("    metadata: ") for line in lines)  # the digest moves with the definition
    assert not any(line.startswith(("    model", "    top_p", "    name")) for line in lines)
    assert "unchanged       ops" in out and "nothing was changed (dry run)" in out

    out = await sync(settings, config(instructions="Be brief."), capsys)
    assert "updated   helper" in out and "instructions, metadata" in out
    assert tagged(emulator)["helper"]["instructions"] == "Be brief."


async def test_drift_on_the_backend_is_repaired(
        settings: Settings, emulator: AssistantsEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    """Someone edits the assistant in a dashboard: the digest still matches, the fields do not."""
    await sync(settings, config(), capsys)
    tagged(emulator)["helper"]["model"] = "someone-else-s-model"
    out = await sync(settings, config(), capsys, dry_run=True)
    assert '    model: "someone-else-s-model" → "gpt-x"' in out.splitlines()
    await sync(settings, config(), capsys)
    assert tagged(emulator)["helper"]["model"] == "gpt-x"


async def test_prune_deletes_tagged_assistants_no_profile_defines(
        settings: Settings, emulator: AssistantsEmulator, redis_client: Redis,
        capsys: pytest.CaptureFixture[str]) -> None:
    await sync(settings, config(), capsys)
    async with AsyncOpenAI(base_url=emulator.base_url, api_key="k") as client:
        untagged = await client.beta.assistants.create(model="m", name="made by hand")
        twin = await client.beta.assistants.create(model="m", metadata={PROFILE_TAG: "helper"})
        fixed = await client.beta.assistants.create(model="m", metadata={PROFILE_TAG: "gone-but-fixed"})
    conf = config()
    conf.profiles.pop("ops")
    conf.profiles["fixed"] = conf.profiles["fixed"].model_copy(update={"assistant_id": fixed.id})
    ops_id = tagged(emulator)["ops"]["id"]

    out = await sync(settings, conf, capsys, prune=True, dry_run=True)
    assert f"would delete    ops                  {ops_id}" in out and "no profile defines it" in out
    assert f"would delete    helper               {twin.id}" in out and "a second assistant" in out
    assert ops_id in emulator.state.assistants

    out = await sync(settings, conf, capsys, prune=True)
    assert set(emulator.state.assistants) == {tagged(emulator)["helper"]["id"], untagged.id, fixed.id}
    assert await redis_client.exists("sb:assistant:default:ops") == 0
    assert "deleted   ops" in out
    assert "0 change(s)" in await sync(settings, conf, capsys, prune=True)


async def test_list_pages_through_more_than_a_hundred(
        settings: Settings, emulator: AssistantsEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    async with AsyncOpenAI(base_url=emulator.base_url, api_key="k") as client:
        for i in range(130):
            await client.beta.assistants.create(model="m", name=f"a{i:03d}")
    assert await admin.assistants(settings, config(), "list") == 0
    out = capsys.readouterr().out
    assert "130 assistant(s) on backend default" in out
    assert "a000" in out and "a129" in out
    pages = [r for r in emulator.state.requests if r.method == "GET" and r.path == "/v1/assistants"]
    assert len(pages) == 2


def test_covers_ignores_what_the_server_adds() -> None:
    assert covers({"type": "function", "function": {"name": "f", "strict": False}},
                  {"type": "function", "function": {"name": "f"}})
    assert not covers([{"type": "a"}, {"type": "b"}], [{"type": "a"}])
    assert covers(1, 1.0) and not covers(True, 1.0) and not covers(None, 0.5)
