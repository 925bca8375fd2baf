"""The YAML config (SPEC §2, §3, §7): backends, tools, profiles, bindings, platform options.

``load_config`` reads the file, expands ``${VAR}`` (and ``${VAR:-fallback}``) from the
environment inside string values, validates everything with pydantic and checks the
cross-references, then raises one ``ConfigError`` listing every problem with its key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from core.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Strict):
    """A backend connection. Without ``base_url``/``api_key`` the SDK's own env vars apply."""

    kind: Literal["assistants", "responses"] = "assistants"
    base_url: str | None = None
    api_key: SecretStr | None = None
    state: Literal["conversations", "previous_response_id", "replay"] = "conversations"
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    replay_max_messages: int = Field(default=50, ge=1)
    replay_max_chars: int = Field(default=48_000, ge=1_000)


class ToolConfig(_Strict):
    """A function tool and the HTTP endpoint that answers it (SPEC §7)."""

    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str
    timeout_s: float = Field(default=15.0, gt=0, le=600)
    secret: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    max_response_bytes: int = Field(default=1_048_576, ge=1, le=64 * 1_048_576)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret (whsec_…)")
        return value


class ProfileConfig(_Strict):
    """A named assistant: an existing ``assistant_id`` or a definition, plus per-run overrides."""

    backend: str = "default"
    assistant_id: str | None = None
    tools: list[str] = Field(default_factory=list)
    # definition (assistants as code; sent with each request on a `responses` backend)
    name: str | None = None
    description: str | None = None
    model: str | None = None
    instructions: str | None = None
    tool_resources: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    response_format: dict[str, Any] | str | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    builtin_tools: list[dict[str, Any]] = Field(default_factory=list)
    # per-run overrides
    additional_instructions: str | None = None
    max_prompt_tokens: int | None = Field(default=None, ge=256)
    max_completion_tokens: int | None = Field(default=None, ge=16)
    truncation_strategy: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @property
    def is_definition(self) -> bool:
        return self.assistant_id is None


class BindingsConfig(_Strict):
    """Which profile answers where: ``{platform: {workspace: {channel|"default": profile}}}``."""

    default: str | None = None
    slack: dict[str, dict[str, str]] = Field(default_factory=dict)
    discord: dict[str, dict[str, str]] = Field(default_factory=dict)
    console: dict[str, dict[str, str]] = Field(default_factory=dict)


class GatewayConfig(_Strict):
    max_concurrent_runs: int = Field(default=64, ge=1)
    run_timeout_s: float = Field(default=600.0, gt=0)
    max_message_chars: int = Field(default=16_000, ge=1)
    max_tool_rounds: int = Field(default=16, ge=1)
    lease_ttl_s: float = Field(default=30.0, ge=2)
    dedupe_ttl_s: int = Field(default=86_400, ge=60)
    conversation_ttl_s: int = Field(default=90 * 86_400, ge=3600)


class RedisConfig(_Strict):
    key_prefix: str = "sb"
    partitions: int = Field(default=1, ge=1, le=256)


class SlackOptions(_Strict):
    answer_bots: bool = False
    admins: list[str] = Field(default_factory=list)


class DiscordOptions(_Strict):
    scope: Literal["channel", "user"] = "channel"
    admins: list[str] = Field(default_factory=list)


class Config(_Strict):
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    tools: dict[str, ToolConfig] = Field(default_factory=dict)
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    bindings: BindingsConfig = Field(default_factory=BindingsConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    slack: SlackOptions = Field(default_factory=SlackOptions)
    discord: DiscordOptions = Field(default_factory=DiscordOptions)

    def model_post_init(self, _context: Any) -> None:
        self.backends.setdefault("default", BackendConfig(kind="assistants"))

    def default_profile(self) -> str | None:
        if self.bindings.default:
            return self.bindings.default
        return next(iter(self.profiles), None)


def _expand(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, fallback = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if fallback is not None:
                return fallback
            problems.append(f"{path}: environment variable {name} is not set")
            return ""
        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    return value


def _cross_check(config: Config) -> list[str]:
    problems: list[str] = []
    for name, profile in config.profiles.items():
        if profile.backend not in config.backends:
            problems.append(f"profiles.{name}.backend: unknown backend {profile.backend!r}"
                            f" (known: {', '.join(sorted(config.backends))})")
        for tool in profile.tools:
            if tool not in config.tools:
                problems.append(f"profiles.{name}.tools: unknown tool {tool!r}")
        backend = config.backends.get(profile.backend)
        if profile.assistant_id is None and profile.model is None:
            problems.append(f"profiles.{name}: needs either assistant_id or a definition with model")
        if backend is not None and backend.kind == "responses" and profile.model is None:
            problems.append(f"profiles.{name}.model: required on a responses backend")
    refs: list[tuple[str, str]] = []
    if config.bindings.default is not None:
        refs.append(("bindings.default", config.bindings.default))
    for platform in ("slack", "discord", "console"):
        for workspace, channels in getattr(config.bindings, platform).items():
            refs += [(f"bindings.{platform}.{workspace}.{ch}", p) for ch, p in channels.items()]
    problems += [f"{path}: unknown profile {p!r}" for path, p in refs if p not in config.profiles]
    if not config.profiles:
        problems.append("profiles: at least one profile is needed")
    return problems


def _format_validation(error: ValidationError) -> list[str]:
    out = []
    for item in error.errors(include_url=False):
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        out.append(f"{path}: {item['msg']}")
    return out


def parse_config(raw: Any, *, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document. Raises ``ConfigError`` with every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top level): must be a mapping of sections"])
    problems: list[str] = []
    expanded = _expand(raw, "", os.environ if env is None else env, problems)
    try:
        config = Config.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(source, problems + _format_validation(exc)) from exc
    problems += _cross_check(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(source, ["file not found (set SWITCHBOARD_CONFIG)"]) from exc
    except OSError as exc:
        raise ConfigError(source, [f"cannot be read: {exc.strerror}"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from exc
    return parse_config(raw, source=source, env=env)
