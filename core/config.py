"""The YAML config (SPEC §2, §3, §7): backends, tools, profiles, bindings, platform options.

``load_config`` reads the file, expands ``${VAR}`` (and ``${VAR:-fallback}``) from the
environment inside string values, validates everything with pydantic and checks the
cross-references, then raises one ``ConfigError`` listing every problem with its key path.

A problem line is ``key.path: problem``. Problem lines never quote a value, and any secret or
environment value that could appear in one (a name that came from ``${VAR}``) is redacted.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from core.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HTTP_URL = re.compile(r"^https?://[^/\s]+")
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DICT_SECTIONS = ("backends", "tools", "profiles")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MIN_REDACTED_CHARS = 8  # shorter values are not secrets, and would garble the messages
_TOOL_CHOICES = ("none", "auto", "required")
_FORMAT_TYPES = ("text", "json_object", "json_schema")
# OpenAI allows 16 metadata pairs; `assistants sync` adds two of its own.
_MAX_METADATA = 14


class _Strict(BaseModel):
    # forbid: a typo is reported, not ignored. coerce: Discord IDs may be written unquoted.
    # hide input: a ValidationError printed anywhere never shows a value, which may be a secret.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, hide_input_in_errors=True)


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

    @field_validator("base_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # `${VAR:-}` leaves it to the SDK's default
        if not _HTTP_URL.match(value):
            raise ValueError("must be an http:// or https:// URL")
        return value


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
        if not _HTTP_URL.match(value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError("must be a JSON Schema with type: object")
        return value

    @field_validator("secret", mode="before")
    @classmethod
    def _empty_secret(cls, value: Any) -> Any:
        return None if value == "" else value  # `${VAR:-}`: requests go unsigned

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret (whsec_…)")
        return value


def _is_whsec(secret: str) -> bool:
    """``whsec_`` and standard base64 of a non-empty key. The signing library decodes leniently,
    dropping characters such as URL-safe ``-`` and ``_``: the key would silently differ from the
    one the endpoint decodes."""
    encoded = secret.removeprefix("whsec_")
    if encoded == secret or not encoded:
        return False
    try:
        return bool(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True))
    except binascii.Error:
        return False


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$", re.IGNORECASE)
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
               "d": 86_400, "day": 86_400}
_MAX_RATE_COUNT = 10_000  # each counted message is kept in Redis for the window: bound the memory
_MAX_RATE_WINDOW_S = 86_400


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` messages in any ``window_s`` seconds."""

    count: int
    window_s: int

    def __str__(self) -> str:
        unit = {86_400: "day", 3600: "hour", 60: "minute", 1: "second"}.get(self.window_s)
        return f"{self.count} per {unit}" if unit else f"{self.count} per {self.window_s} s"


def parse_rate(text: str) -> RateLimit:
    """``"10/minute"``, ``"100/hour"``, ``"5/30s"`` → ``RateLimit``. Raises ``ValueError``."""
    match = _RATE.match(text)
    if match is None:
        raise ValueError("must be N/unit, e.g. 10/minute, 100/hour or 5/30s")
    count, size, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3).lower()
    window_s = size * _RATE_UNITS[unit]
    if not 1 <= count <= _MAX_RATE_COUNT or not 1 <= window_s <= _MAX_RATE_WINDOW_S:
        raise ValueError(f"allows 1 to {_MAX_RATE_COUNT} messages in a window of 1 second to 1 day")
    return RateLimit(count, window_s)


class RateLimitConfig(_Strict):
    """Messages a profile takes, per person and per channel (each in any sliding window), across processes."""

    per_user: str | None = None
    per_channel: str | None = None

    @field_validator("per_user", "per_channel")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @property
    def is_set(self) -> bool:
        return bool(self.per_user or self.per_channel)

    def user_limit(self) -> RateLimit | None:
        return parse_rate(self.per_user) if self.per_user else None

    def channel_limit(self) -> RateLimit | None:
        return parse_rate(self.per_channel) if self.per_channel else None


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
    # intake
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)

    @property
    def is_definition(self) -> bool:
        return self.assistant_id is None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > _MAX_METADATA:
            raise ValueError(f"at most {_MAX_METADATA} entries (assistants sync adds two more)")
        if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
            raise ValueError("keys are at most 64 characters, values at most 512")
        return value

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, value: dict[str, Any] | str | None) -> dict[str, Any] | str | None:
        if value is None or value == "auto" or (isinstance(value, dict) and value.get("type") in _FORMAT_TYPES):
            return value
        raise ValueError("must be auto or {type: text | json_object | json_schema, …}")

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value is None or value in _TOOL_CHOICES or (isinstance(value, dict) and isinstance(value.get("type"), str)):
            return value
        raise ValueError("must be none, auto, required or {type: function, function: {name: …}}")

    @field_validator("truncation_strategy")
    @classmethod
    def _truncation(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or value == {"type": "auto"}:
            return value
        last = value.get("last_messages")
        if value.get("type") == "last_messages" and isinstance(last, int) and last >= 1 and len(value) == 2:
            return value
        raise ValueError("must be {type: auto} or {type: last_messages, last_messages: N}")

    @field_validator("builtin_tools")
    @classmethod
    def _builtin_types(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not all(isinstance(tool.get("type"), str) for tool in value):
            raise ValueError("each entry needs a type (file_search, code_interpreter, …)")
        return value


class BindingsConfig(_Strict):
    """Which profile answers where: ``{platform: {workspace: {channel|"default": profile}}}``."""

    default: str | None = None
    slack: dict[str, dict[str, str]] = Field(default_factory=dict)
    discord: dict[str, dict[str, str]] = Field(default_factory=dict)
    console: dict[str, dict[str, str]] = Field(default_factory=dict)


class GatewayConfig(_Strict):
    """Limits and lifetimes of the conversation engine."""

    max_concurrent_runs: int = Field(default=64, ge=1)
    run_timeout_s: float = Field(default=600.0, gt=0)
    max_message_chars: int = Field(default=16_000, ge=1)
    max_tool_rounds: int = Field(default=16, ge=1)
    lease_ttl_s: float = Field(default=10.0, ge=2)
    # On SIGTERM: how long answers in flight may take to finish before they are handed to another process.
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    dedupe_ttl_s: int = Field(default=86_400, ge=60)
    conversation_ttl_s: int = Field(default=90 * 86_400, ge=3600)
    # Seconds between checks of the config file for changes (hot reload); 0: only on SIGHUP.
    config_poll_s: float = Field(default=2.0, ge=0)


class RedisConfig(_Strict):
    """How keys are named: ``key_prefix`` is part of every Redis Cluster hash tag."""

    key_prefix: str = "sb"
    partitions: int = Field(default=1, ge=1, le=256)

    @field_validator("key_prefix")
    @classmethod
    def _tag_safe(cls, value: str) -> str:
        if not re.fullmatch(r"[^{}\s]+", value):
            raise ValueError("must be non-empty, without braces or spaces (it is part of the hash tag)")
        return value


class SlackOptions(_Strict):
    answer_bots: bool = False
    admins: list[str] = Field(default_factory=list)
    admin_groups: list[str] = Field(default_factory=list)


class DiscordOptions(_Strict):
    scope: Literal["channel", "user"] = "channel"
    admins: list[str] = Field(default_factory=list)
    # Privileged intent, switched on in the developer portal. Off: people must mention the bot in its threads.
    message_content: bool = True
    thread_archive_minutes: Literal[60, 1440, 4320, 10080] = 1440
    # Spread shards over processes: each process runs ``shard_ids`` out of ``shard_count``.
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: list[int] | None = None

    @field_validator("shard_ids")
    @classmethod
    def _shards_in_range(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None:
            return None
        count = info.data.get("shard_count")
        if count is None:
            raise ValueError("needs discord.shard_count")
        if not value or any(not 0 <= shard < count for shard in value):
            raise ValueError(f"must be a non-empty list of shard numbers from 0 to {count - 1}")
        return value


class SlackAccess(_Strict):
    """Where the bot answers on Slack. An empty list allows all; threads follow their channel."""

    workspaces: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    dms: bool = True


class DiscordAccess(_Strict):
    """Where the bot answers on Discord. An empty list allows all; threads follow their parent channel."""

    guilds: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    dms: bool = True


class AccessConfig(_Strict):
    """Allowlists per platform (default: everywhere the bot is installed)."""

    slack: SlackAccess = Field(default_factory=SlackAccess)
    discord: DiscordAccess = Field(default_factory=DiscordAccess)


class Config(_Strict):
    """The whole file. ``backends`` always has ``default`` (kind ``assistants``, from ``OPENAI_*``)."""

    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    tools: dict[str, ToolConfig] = Field(default_factory=dict)
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    bindings: BindingsConfig = Field(default_factory=BindingsConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    slack: SlackOptions = Field(default_factory=SlackOptions)
    discord: DiscordOptions = Field(default_factory=DiscordOptions)
    access: AccessConfig = Field(default_factory=AccessConfig)

    def model_post_init(self, _context: Any) -> None:
        self.backends.setdefault("default", BackendConfig(kind="assistants"))

    def default_profile(self) -> str | None:
        if self.bindings.default:
            return self.bindings.default
        return next(iter(self.profiles), None)


class _TrackedEnv(Mapping[str, str]):
    """The environment, remembering every value read from it so problem lines can be redacted."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.used: list[str] = []

    def __getitem__(self, key: str) -> str:
        value = self._env[key]
        self.used.append(value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _expand(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    """``value`` with ``${VAR}`` expanded in every string; mapping keys become strings (YAML reads
    unquoted IDs as numbers). Each problem is appended as ``path: problem``."""
    if isinstance(value, str):
        return _expand_string(value, path, env, problems)
    if isinstance(value, dict):
        return {str(k): _expand(v, _join(path, str(k)), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    return value


def _expand_string(value: str, path: str, env: Mapping[str, str], problems: list[str]) -> str:
    """``${VAR}`` is VAR's value; ``${VAR:-fallback}`` is the fallback when VAR is unset or empty (as in a shell)."""
    def sub(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if env.get(name):
            return env[name]
        if fallback is not None:
            return fallback
        if name not in env:
            problems.append(f"{path}: environment variable {name} is not set")
        return ""

    if "${" in _VAR.sub("", value) or any("${" in (m.group(2) or "") for m in _VAR.finditer(value)):
        problems.append(f"{path}: malformed ${{…}} reference (write ${{NAME}} or ${{NAME:-fallback}}, not nested)")
        return ""
    return _VAR.sub(sub, value)


@dataclass
class _Broken:
    """What failed validation. Those names are declared, so references to them are not reported again."""

    entries: dict[str, set[str]] = field(default_factory=dict)  # section -> names of failed entries
    sections: set[str] = field(default_factory=set)  # sections that are not mappings at all
    fields: dict[str, set[str]] = field(default_factory=dict)  # profile -> its failed fields, taken out

    def declares(self, section: str, name: str) -> bool:
        return section in self.sections or name in self.entries.get(section, set())

    def has(self, section: str) -> bool:
        return section in self.sections or bool(self.entries.get(section))

    def names(self, section: str, valid: Mapping[str, Any]) -> str:
        return ", ".join(sorted({*valid, *self.entries.get(section, set())})) or "none"


def _cross_check(config: Config, broken: _Broken | None = None) -> list[str]:
    """Problems across sections: references to undeclared names, and rules that span fields.
    Entries in ``broken`` already have their own problems: references to them are not repeated."""
    broken = broken or _Broken()
    problems = _check_backends(config) + _check_tools(config)
    for name, profile in config.profiles.items():
        problems += _check_profile(name, profile, config, broken)
    problems += _check_bindings(config, broken)
    if not config.profiles and not broken.has("profiles"):
        problems.append("profiles: at least one profile is needed")
    return problems


def _check_backends(config: Config) -> list[str]:
    problems: list[str] = []
    for name, backend in config.backends.items():
        given = backend.model_fields_set
        if backend.kind == "assistants":
            misplaced = {"state", "replay_max_messages", "replay_max_chars"} & given
            problems += [f"backends.{name}.{key}: only applies to kind: responses" for key in sorted(misplaced)]
        elif backend.state != "replay":
            misplaced = {"replay_max_messages", "replay_max_chars"} & given
            problems += [f"backends.{name}.{key}: only applies to state: replay" for key in sorted(misplaced)]
    return problems


def _check_tools(config: Config) -> list[str]:
    problems: list[str] = []
    for name, tool in config.tools.items():
        if not _FUNCTION_NAME.match(name):
            problems.append(f"tools.{name}: a function name is 1 to 64 letters, digits, _ or -")
        if tool.secret is not None and not _is_whsec(tool.secret.get_secret_value()):
            problems.append(f"tools.{name}.secret: must be whsec_ followed by standard base64 (not URL-safe)")
    return problems


def _check_profile(name: str, profile: ProfileConfig, config: Config, broken: _Broken) -> list[str]:
    """Fields that failed validation were taken out: the checks that read them are skipped."""
    path, dropped = f"profiles.{name}", broken.fields.get(name, set())
    problems: list[str] = []
    backend = config.backends.get(profile.backend)
    if backend is None and "backend" not in dropped and not broken.declares("backends", profile.backend):
        problems.append(f"{path}.backend: unknown backend {profile.backend!r}"
                        f" (declared: {broken.names('backends', config.backends)})")
    listed = dict.fromkeys(profile.tools)
    if len(listed) < len(profile.tools):
        problems.append(f"{path}.tools: a tool is listed more than once")
    problems += [f"{path}.tools: unknown tool {tool!r} (declared: {broken.names('tools', config.tools)})"
                 for tool in listed if tool not in config.tools and not broken.declares("tools", tool)]
    if not dropped & {"backend", "model", "assistant_id"}:
        problems += _check_model(path, profile, backend)
    chosen = _chosen_function(profile.tool_choice)
    if chosen is not None and chosen not in listed and "tools" not in dropped:
        problems.append(f"{path}.tool_choice: function {chosen!r} is not in this profile's tools")
    return problems


def _check_model(path: str, profile: ProfileConfig, backend: BackendConfig | None) -> list[str]:
    if backend is not None and backend.kind == "responses" and profile.model is None:
        return [f"{path}.model: required on a responses backend (it is sent with each request)"]
    if profile.assistant_id is None and profile.model is None:
        return [f"{path}: needs either assistant_id (an existing assistant) or a definition with model"]
    return []


def _chosen_function(choice: str | dict[str, Any] | None) -> str | None:
    """The function a ``tool_choice`` forces, in the Assistants or the Responses shape."""
    if not isinstance(choice, dict) or choice.get("type") != "function":
        return None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else choice.get("name")
    return name if isinstance(name, str) else None


def _check_bindings(config: Config, broken: _Broken) -> list[str]:
    if "profiles" in broken.sections:
        return []
    refs: list[tuple[str, str]] = []
    if config.bindings.default is not None:
        refs.append(("bindings.default", config.bindings.default))
    for platform in BindingsConfig.model_fields:
        places = getattr(config.bindings, platform)
        if isinstance(places, dict):
            refs += [(f"bindings.{platform}.{workspace}.{channel}", profile)
                     for workspace, channels in places.items() for channel, profile in channels.items()]
    return [f"{path}: unknown profile {profile!r} (declared: {broken.names('profiles', config.profiles)})"
            for path, profile in refs if profile not in config.profiles and not broken.declares("profiles", profile)]


def _path(loc: list[str | int]) -> str:
    out = ""
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out


def _keys_at(loc: list[str | int]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` (model fields and entry names), if it is a model."""
    node: Any = Config
    parts = iter(loc)
    for part in parts:
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return []
        node = node.model_fields[str(part)].annotation
        if get_origin(node) is dict:
            node = get_args(node)[1]
            next(parts, None)  # the entry's name
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _unknown_key(loc: list[str | int]) -> str:
    allowed = _keys_at(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected one of: {', '.join(allowed)})" if allowed else "unknown key"


def _describe(item: ErrorDetails) -> tuple[str, str]:
    """The key path and message of one pydantic error. The input value is never part of it."""
    loc = [part for part in item["loc"] if part != "[key]"]
    path = _path(loc) or "(top level)"
    if item["type"] == "extra_forbidden" and loc:
        return path, _unknown_key(loc)
    if item["type"] == "missing":
        return path, "required"
    return path, item["msg"].removeprefix("Value error, ")


def _format_validation(error: ValidationError) -> list[str]:
    return [f"{path}: {message}" for path, message in map(_describe, error.errors(include_url=False))]


def _under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith((root + ".", root + "[")) for root in roots)


def _validate(data: dict[str, Any], problems: list[str], unset: list[str]) -> Config | None:
    """The ``Config``, or ``None`` with every problem appended. When some entries fail, the
    cross-references are still checked on the ones that did not, so one run reports everything."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
    for path, message in map(_describe, errors):
        if not _under(path, unset):  # an unset variable already explains this one
            problems.append(f"{path}: {message}")
    pruned, broken = _prune(data, errors)
    try:
        partial = Config.model_validate(pruned)
    except ValidationError:
        return None  # pruning removes every failing part, so this is not expected; the problems above stand
    problems += _cross_check(partial, broken)
    return None


def _prune(data: dict[str, Any], errors: list[ErrorDetails]) -> tuple[dict[str, Any], _Broken]:
    """``data`` without the parts that failed, and which entries those were."""
    pruned = copy.deepcopy(data)
    broken = _Broken()
    for item in errors:
        loc = [part for part in item["loc"] if part != "[key]"]
        section = str(loc[0]) if loc else ""
        if section == "profiles" and len(loc) >= 3:
            broken.entries.setdefault(section, set()).add(str(loc[1]))
            broken.fields.setdefault(str(loc[1]), set()).add(str(loc[2]))
            _remove(pruned, loc[:3])
        elif section in _DICT_SECTIONS and len(loc) >= 2:
            broken.entries.setdefault(section, set()).add(str(loc[1]))
            _remove(pruned, loc[:2])
        elif section == "bindings" and len(loc) >= 2:
            _remove(pruned, loc)
        else:
            if section in _DICT_SECTIONS:
                broken.sections.add(section)
            pruned.pop(section, None)
    return pruned, broken


def _remove(data: dict[str, Any], loc: list[str | int]) -> None:
    parent: Any = data
    for part in loc[:-1]:
        parent = parent.get(part) if isinstance(parent, dict) else None
    if isinstance(parent, dict):
        parent.pop(loc[-1], None)
    else:
        data.pop(str(loc[0]), None)


def _secret_values(data: dict[str, Any], env_used: list[str]) -> list[str]:
    """Every value that may be secret: the secret fields, their words, and all that came from the environment."""
    values: list[Any] = list(env_used)
    for backend in _entries(data, "backends"):
        values.append(backend.get("api_key"))
    for tool in _entries(data, "tools"):
        values.append(tool.get("secret"))
        headers = tool.get("headers")
        values += list(headers.values()) if isinstance(headers, dict) else []
    words = {word for value in values if isinstance(value, str) for word in [value, *value.split()]}
    return sorted((w for w in words if len(w) >= _MIN_REDACTED_CHARS), key=len, reverse=True)


def _entries(data: dict[str, Any], section: str) -> list[dict[str, Any]]:
    entries = data.get(section)
    return [e for e in entries.values() if isinstance(e, dict)] if isinstance(entries, dict) else []


def _redact(problems: list[str], secrets: list[str]) -> list[str]:
    """Problem lines never quote values, but a name echoed in one may have come from a secret."""
    for secret in secrets:
        pattern = re.compile(rf"(?<!\w){re.escape(secret)}(?!\w)")
        problems = [pattern.sub("***", line) for line in problems]
    return problems


def parse_config(raw: Any, *, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document, expanding ``${VAR}`` from ``env`` (default: the process
    environment). Raises ``ConfigError`` listing every problem as ``key.path: problem``, values redacted."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top level): must be a mapping of sections"])
    tracked = _TrackedEnv(os.environ if env is None else env)
    problems: list[str] = []
    expanded = _expand(raw, "", tracked, problems)
    unset = [line.split(": ", 1)[0] for line in problems]
    # A section whose entries are all commented out reads as null: that is an empty section.
    # Top-level `x-…` keys are free for YAML anchors, as in compose files.
    data = {key: value for key, value in expanded.items() if value is not None and not key.startswith("x-")}
    config = _validate(data, problems, unset)
    if config is not None:
        problems += _cross_check(config)
    if config is None or problems:
        raise ConfigError(source, _redact(problems, _secret_values(data, tracked.used)))
    return config


def _read(path: Path) -> str:
    source = str(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(source, ["file not found (set SWITCHBOARD_CONFIG to the config's path)"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"byte {exc.start}: not UTF-8 text"]) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot be read: {exc.strerror}"]) from exc


def _parse_yaml(text: str, source: str) -> tuple[Any, list[str]]:
    """The YAML document and its duplicate-key problems. A syntax error raises ``ConfigError``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        # before constructing: merge keys (`<<: *base`) are flattened into the node in place
        duplicates = _duplicate_keys(node, "", set()) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        # `from None`: PyYAML's own message quotes the offending line, which may hold a secret
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML ({type(exc).__name__})"]) from None
    finally:
        loader.dispose()
    return data, duplicates


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = f" ({exc.context})" if exc.context else ""
    return f"{where}not valid YAML: {exc.problem or 'syntax error'}{context}"


def _duplicate_keys(node: yaml.Node, path: str, visited: set[int]) -> list[str]:
    """PyYAML keeps the last of two equal keys without a word; an edit that lands in the wrong place
    is then silently lost, so each repeat is a problem."""
    if id(node) in visited:  # an alias: already walked
        return []
    visited.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        return [p for i, item in enumerate(node.value) for p in _duplicate_keys(item, f"{path}[{i}]", visited)]
    if not isinstance(node, yaml.MappingNode):
        return []
    problems: list[str] = []
    first: dict[str, int] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in first:
            problems.append(f"{_join(path, key)}: duplicate key on line {line} (first on line {first[key]})")
        first.setdefault(key, line)
        problems += _duplicate_keys(value_node, _join(path, key), visited)
    return problems


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``. Raises ``ConfigError`` naming the file and listing
    every problem: YAML syntax with line and column, duplicate and unknown keys, values, references."""
    source = str(path)
    raw, duplicates = _parse_yaml(_read(path), source)
    try:
        config = parse_config(raw, source=source, env=env)
    except ConfigError as exc:
        raise ConfigError(source, duplicates + exc.problems) from None
    if duplicates:
        raise ConfigError(source, duplicates)
    return config
