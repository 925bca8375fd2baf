"""Pytest fixtures shared by the tests that drive a Slack reply sink against the emulator.

Registered for the whole suite by ``pytest_plugins`` in tests/conftest.py; a module that defines
its own ``emu`` (the Discord tests do) overrides it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr

from bots.slack.client import web_client
from bots.slack.sink import SlackSinkFactory
from core.settings import Settings
from tests.emulators.slack import SlackEmulator


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    emulator = SlackEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def factory(emu: SlackEmulator) -> AsyncIterator[SlackSinkFactory]:
    # No trailing slash on purpose: the client must add it (slack-sdk joins with urljoin).
    settings = Settings(SLACK_BOT_TOKEN=SecretStr(emu.bot_token), SLACK_API_URL=emu.base_url.rstrip("/"))
    async with aiohttp.ClientSession() as session:
        sinks = SlackSinkFactory(web_client(settings, session))
        yield sinks
        await sinks.aclose()
