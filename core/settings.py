"""Settings from the environment (SPEC §5). Read once, in the entry point, and passed down.

Secrets are ``SecretStr``: their repr is masked, so they never reach a log line by accident.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_log_format() -> Literal["json", "console"]:
    return "console" if sys.stderr.isatty() else "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    config_path: Path = Field(
        default=Path("config/switchboard.yaml"), validation_alias="SWITCHBOARD_CONFIG"
    )
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")

    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", validation_alias="SLACK_API_URL")

    discord_bot_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_BOT_TOKEN")
    discord_api_url: str = Field(default="https://discord.com/api/v10", validation_alias="DISCORD_API_URL")
    discord_gateway_url: str | None = Field(default=None, validation_alias="DISCORD_GATEWAY_URL")

    host: str = Field(default="0.0.0.0", validation_alias="SWITCHBOARD_HOST")
    port: int = Field(default=8080, validation_alias="SWITCHBOARD_PORT")
    log_format: Literal["json", "console"] = Field(
        default_factory=_default_log_format,
        validation_alias=AliasChoices("SWITCHBOARD_LOG_FORMAT"),
    )

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def discord_enabled(self) -> bool:
        return self.discord_bot_token is not None

    def slack_api_base(self) -> str:
        """slack-sdk joins paths with ``urljoin``: without a trailing ``/`` the last segment is lost."""
        return self.slack_api_url if self.slack_api_url.endswith("/") else self.slack_api_url + "/"
