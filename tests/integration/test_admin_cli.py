"""``switchboard bindings`` and ``switchboard assistants sync`` as an admin runs them: real processes,
real Redis, the Assistants emulator; changes made in chat and from the shell share one audit trail."""

from __future__ import annotations

import getpass
import re
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from core.audit import BindingLog
from core.config import load_config
from core.emulator.assistants import AssistantsEmulator
from core.keys import Keys
from core.settings import Settings
from switchboard import admin, cli
from tests.conftest import RedisServer
from tests.integration.test_cli import clean_env, switchboard

CONFIG = """
profiles:
  helper: {model: emulator-1, instructions: Be brief.}
  ops: {model: emulator-2, instructions: You are ops.}
bindings:
  default: helper
  slack: {T0TEAM: {C0SUPPORT: ops}}
"""


async def test_scripted_bindings_and_their_history(tmp_path: Path, redis_server: RedisServer, redis_client: Redis,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    env = clean_env(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url)
    chat = BindingLog(redis_client, keys=Keys())
    steps = [
        ("set", "slack", "T0TEAM", "C0GENERAL", "ops"),
        ("set", "slack", "T0TEAM", "*", "ops"),
        ("chat", "slack", "T0TEAM", "C0GENERAL", "helper"),
        ("set", "discord", "111", "222", "ops"),
        ("chat", "discord", "111", "*", "helper"),
        ("unset", "slack", "T0TEAM", "*", None),
        ("set", "slack", "T0TEAM", "C0GENERAL", "helper"),  # already so: no entry
    ]
    settings = Settings(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url)
    for how, platform, workspace, channel, profile in steps:
        if how == "chat":
            await chat.change(platform=platform, workspace=workspace, channel=channel, profile=profile,
                              actor="U0ADMIN", via="chat")
            continue
        args = ["bindings", how, platform, workspace, channel] + (["--profile", profile] if profile else [])
        # in-process, through the CLI's own parser (a process per step would take seconds each)
        assert await admin.bindings(settings, load_config(config), cli._parser().parse_args(args)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "unchanged slack/T0TEAM/C0GENERAL → helper"

    code, out, err = await switchboard("bindings", "history", env=env)
    assert code == 0, err
    with capsys.disabled():
        print(f"\n$ switchboard bindings history\n{out}")
    me = getpass.getuser()
    rows = [re.sub(r"^\S+ \S+\s+", "", line).split() for line in out.splitlines()[:-1]]
    assert rows == [
        ["slack/T0TEAM/C0GENERAL", "(none)", "→", "ops", "by", me, "via", "cli"],
        ["slack/T0TEAM/*", "(none)", "→", "ops", "by", me, "via", "cli"],
        ["slack/T0TEAM/C0GENERAL", "ops", "→", "helper", "by", "U0ADMIN", "via", "chat"],
        ["discord/111/222", "(none)", "→", "ops", "by", me, "via", "cli"],
        ["discord/111/*", "(none)", "→", "helper", "by", "U0ADMIN", "via", "chat"],
        ["slack/T0TEAM/*", "ops", "→", "(none)", "by", me, "via", "cli"],
    ]
    assert out.splitlines()[-1] == "6 change(s)"
    code, out, _ = await switchboard("bindings", "history", "--platform", "discord", "--limit", "1", env=env)
    assert code == 0 and "discord/111/*" in out and "222" not in out

    for place, expected in [(["C0SUPPORT"], "ops (channel binding, from the config file)"),
                            (["C0GENERAL"], "helper (channel binding, from an admin)"),
                            ([], "helper (global binding, from the config file)")]:
        args = cli._parser().parse_args(["bindings", "show", "slack", "T0TEAM", *place])
        await admin.bindings(settings, load_config(config), args)
        assert capsys.readouterr().out.strip().endswith(expected)


async def test_assistants_sync_dry_run_then_sync_from_the_shell(tmp_path: Path, redis_server: RedisServer,
                                                                redis_client: Redis,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    async with AssistantsEmulator() as emulator:
        env = clean_env(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url, OPENAI_API_KEY="k",
                        OPENAI_BASE_URL=emulator.base_url)
        code, out, err = await switchboard("assistants", "sync", "--dry-run", "--prune", env=env)
        assert code == 0, err
        assert "would create    helper" in out and '    model: – → "emulator-1"' in out
        assert emulator.state.assistants == {}
        settings = Settings(SWITCHBOARD_CONFIG=str(config), REDIS_URL=redis_server.url, OPENAI_API_KEY=SecretStr("k"),
                            OPENAI_BASE_URL=emulator.base_url)
        await admin.assistants(settings, load_config(config), "sync")
        out = capsys.readouterr().out
        assert "created   helper" in out and "created   ops" in out
        await admin.assistants(settings, load_config(config), "sync")
        assert "backend default: 0 change(s) for 2 assistant(s); done" in capsys.readouterr().out
