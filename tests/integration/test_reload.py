"""Hot reload in a running gateway: the config file watched on disk and re-read on request (SIGHUP's
path), valid files applied to new runs, invalid ones refused with every problem while the old one stays."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis

from core.reload import ConfigReloader
from tests.conftest import RedisServer
from tests.integration.admin_support import instructions_used
from tests.integration.harness import Stack, open_stack

POLL_S = 0.05


def raw_config(**profiles: dict[str, Any]) -> dict[str, Any]:
    return {"profiles": {"helper": {"model": "emulator-1", "instructions": "Be helpful."}, **profiles},
            "gateway": {"config_poll_s": POLL_S, "lease_ttl_s": 5}}


def write(path: Path, content: dict[str, Any] | str | None) -> None:
    """Replace (None: remove) the config file; a plain function: a quick local write needs no thread in a test."""
    if content is None:
        path.unlink()
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))


@contextlib.asynccontextmanager
async def watched(redis_url: str, path: Path) -> AsyncIterator[tuple[Stack, ConfigReloader]]:
    write(path, raw_config())
    async with open_stack(redis_url, extra_config={"gateway": {"config_poll_s": POLL_S}}) as stack:
        runtime = stack.runtime
        reloader = ConfigReloader(path, current=lambda: runtime.config, apply=runtime.apply_config,
                                  running_backends=runtime.backends.backends)
        task = asyncio.create_task(reloader.run())
        await asyncio.sleep(POLL_S)  # the first look at the file
        try:
            yield stack, reloader
        finally:
            reloader.stop()
            await task


async def until(predicate: Callable[[], bool], timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (the reloader works on its own clock)
            await asyncio.sleep(0.01)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "switchboard.yaml"


async def test_a_valid_change_on_disk_applies_to_the_next_message(
        redis_server: RedisServer, redis_client: Redis, config_file: Path) -> None:
    async with watched(redis_server.url, config_file) as (stack, _):
        await stack.ask("before")
        raw = raw_config(ops={"model": "emulator-2", "instructions": "You are ops."})
        raw["bindings"] = {"default": "ops"}
        write(config_file, raw)
        await until(lambda: "ops" in stack.runtime.gateway.config.profiles)
        assert stack.runtime.config is stack.runtime.gateway.config
        await stack.ask("after")
        assert instructions_used(stack.emulator) == ["Be helpful.", "You are ops."]


async def test_an_invalid_file_is_refused_with_every_problem_and_the_old_config_stays(
        redis_server: RedisServer, redis_client: Redis, config_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with watched(redis_server.url, config_file) as (stack, _):
        running = stack.runtime.gateway.config
        write(config_file, "profiles:\n  helper: {model: m, temperature: 9, tool: [x]}\n"
                           "bindings: {default: nobody}\n")
        with caplog.at_level(logging.ERROR, logger="core.reload"):
            await until(lambda: any("refused" in r.message for r in caplog.records))
        [record] = [r for r in caplog.records if "refused" in r.message]
        problems = record.__dict__["problems"]
        assert any(p.startswith("profiles.helper.temperature:") for p in problems)
        assert any(p.startswith("profiles.helper.tool: unknown key (did you mean 'tools'?)") for p in problems)
        assert any(p.startswith("bindings.default: unknown profile 'nobody'") for p in problems)
        assert all(p in record.getMessage() for p in problems)  # the log line lists them all
        assert stack.runtime.gateway.config is running
        assert (await stack.ask("still answered")).text.startswith("[emulator] You said: still answered")


async def test_on_request_a_new_backend_is_refused_and_start_only_settings_are_named(
        redis_server: RedisServer, redis_client: Redis, config_file: Path) -> None:
    async with watched(redis_server.url, config_file) as (stack, reloader):
        raw = raw_config(far={"backend": "elsewhere", "model": "m"})
        raw["backends"] = {"elsewhere": {"kind": "responses", "base_url": "http://127.0.0.1:9/v1"}}
        write(config_file, raw)
        result = await reloader.reload("signal")
        assert not result.applied
        assert result.problems == ["profiles.far.backend: backend 'elsewhere' is not running in this process "
                                   "(a new backend needs a restart)"]
        assert "far" not in stack.runtime.gateway.config.profiles

        raw = raw_config()
        raw["redis"] = {"key_prefix": "other"}
        raw["gateway"]["max_concurrent_runs"] = 3
        write(config_file, raw)
        reloader.request()
        await until(lambda: stack.runtime.gateway.config.redis.key_prefix == "other")
        result = await reloader.reload("signal")
        assert result.applied and result.restart_needed == ["redis", "gateway.max_concurrent_runs"]


async def test_a_file_that_disappears_for_a_while_changes_nothing(
        redis_server: RedisServer, redis_client: Redis, config_file: Path) -> None:
    async with watched(redis_server.url, config_file) as (stack, reloader):
        running = stack.runtime.gateway.config
        write(config_file, None)
        result = await reloader.reload("signal")
        assert result.problems == ["file not found (set SWITCHBOARD_CONFIG to the config's path)"]
        assert stack.runtime.gateway.config is running
        write(config_file, raw_config(back={"model": "m"}))
        await until(lambda: "back" in stack.runtime.gateway.config.profiles)
