"""Settings from the environment: the SPEC §5 names, defaults, and secrets that stay masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings

SPEC_VARIABLES = [
    "SWITCHBOARD_CONFIG", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL", "DISCORD_BOT_TOKEN", "DISCORD_API_URL",
    "DISCORD_GATEWAY_URL", "SWITCHBOARD_HOST", "SWITCHBOARD_PORT", "SWITCHBOARD_LOG_FORMAT",
]
SECRETS = {
    "OPENAI_API_KEY": "sk-test-openai-0123456789",
    "SLACK_BOT_TOKEN": "xoxb-test-bot-0123456789",
    "SLACK_SIGNING_SECRET": "signing-secret-0123456789",
    "SLACK_APP_TOKEN": "xapp-test-app-0123456789",
    "DISCORD_BOT_TOKEN": "discord-token-0123456789",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SPEC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_without_any_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_LOG_FORMAT", "json")
    settings = Settings()
    assert settings.config_path == Path("config/switchboard.yaml")
    assert settings.redis_url is None
    assert settings.openai_api_key is None and settings.openai_base_url is None
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.discord_api_url == "https://discord.com/api/v10"
    assert settings.discord_gateway_url is None
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert not settings.slack_enabled and not settings.discord_enabled


def test_every_spec_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "SWITCHBOARD_CONFIG": "/etc/switchboard/prod.yaml",
        "REDIS_URL": "rediss://redis.internal:6380/2",
        "OPENAI_BASE_URL": "http://127.0.0.1:9000/v1",
        "SLACK_API_URL": "http://127.0.0.1:9001/api/",
        "DISCORD_API_URL": "http://127.0.0.1:9002/api/v10",
        "DISCORD_GATEWAY_URL": "ws://127.0.0.1:9003/gateway",
        "SWITCHBOARD_HOST": "127.0.0.1",
        "SWITCHBOARD_PORT": "9090",
        "SWITCHBOARD_LOG_FORMAT": "console",
        **SECRETS,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.config_path == Path("/etc/switchboard/prod.yaml")
    assert settings.redis_url == "rediss://redis.internal:6380/2"
    assert settings.openai_base_url == "http://127.0.0.1:9000/v1"
    assert settings.slack_api_url == "http://127.0.0.1:9001/api/"
    assert settings.discord_api_url == "http://127.0.0.1:9002/api/v10"
    assert settings.discord_gateway_url == "ws://127.0.0.1:9003/gateway"
    assert (settings.host, settings.port, settings.log_format) == ("127.0.0.1", 9090, "console")
    secrets = {
        "OPENAI_API_KEY": settings.openai_api_key, "SLACK_BOT_TOKEN": settings.slack_bot_token,
        "SLACK_SIGNING_SECRET": settings.slack_signing_secret, "SLACK_APP_TOKEN": settings.slack_app_token,
        "DISCORD_BOT_TOKEN": settings.discord_bot_token,
    }
    assert {name: s.get_secret_value() if s else None for name, s in secrets.items()} == SECRETS
    assert settings.slack_enabled and settings.discord_enabled


def test_platforms_are_enabled_by_their_bot_token_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    settings = Settings()
    assert settings.slack_enabled and not settings.discord_enabled


@pytest.mark.parametrize(("url", "base"), [
    ("https://slack.com/api/", "https://slack.com/api/"),
    ("http://127.0.0.1:9001/api", "http://127.0.0.1:9001/api/"),
])
def test_slack_api_base_always_ends_with_a_slash(monkeypatch: pytest.MonkeyPatch, url: str, base: str) -> None:
    monkeypatch.setenv("SLACK_API_URL", url)
    assert Settings().slack_api_base() == base


def test_secrets_are_masked_in_repr_str_and_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    shown = repr(settings) + str(settings) + str(settings.model_dump()) + settings.model_dump_json()
    for value in SECRETS.values():
        assert value not in shown
    assert "**********" in shown


@pytest.mark.parametrize(("name", "value"), [("SWITCHBOARD_PORT", "http"), ("SWITCHBOARD_LOG_FORMAT", "xml")])
def test_a_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_keyword_arguments_are_accepted_for_tests_and_the_cli() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", port=1234)
    assert (settings.redis_url, settings.port) == ("redis://127.0.0.1:1/0", 1234)
