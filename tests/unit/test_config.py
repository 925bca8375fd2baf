"""The config loader: every problem at once, each as ``key.path: problem``, secrets never echoed."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from core.config import (
    AccessConfig,
    BackendConfig,
    BindingsConfig,
    Config,
    DiscordAccess,
    DiscordOptions,
    GatewayConfig,
    ProfileConfig,
    RateLimitConfig,
    RedisConfig,
    SlackAccess,
    SlackOptions,
    ToolConfig,
    load_config,
    parse_config,
)
from core.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "switchboard.example.yaml"
WHSEC = "whsec_" + base64.b64encode(b"a-test-secret-of-thirty-two-byte").decode()
PROFILE = {"assistant_id": "asst_abc123"}


def problems(raw: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="test.yaml", env=env or {})
    assert info.value.source == "test.yaml"
    return info.value.problems


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "switchboard.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=env or {})


def load_problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    assert str(tmp_path / "switchboard.yaml") in str(info.value)
    return info.value.problems


def assert_chain_is_empty(error: BaseException) -> None:
    """A chained ValidationError or YAML error would print input values (secrets) in a traceback."""
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# --- all problems at once -------------------------------------------------------------------

def test_five_different_problems_are_all_listed_in_one_error() -> None:
    raw = {
        "backends": {"local": {"kind": "responses", "base_url": "${LOCAL_URL}"}},
        "tools": {"weather": {"url": "https://tools.example/w", "timeout_s": -1}},
        "profiles": {
            "support": {"assistant_id": "asst_1", "tools": ["weather", "search"]},
            "local": {"backend": "local", "instructions": "hi"},
            "typo": {"assistant_id": "asst_2", "temprature": 0.5},
        },
    }
    found = problems(raw)
    assert found == [
        "backends.local.base_url: environment variable LOCAL_URL is not set",
        "tools.weather.timeout_s: Input should be greater than 0",
        "profiles.typo.temprature: unknown key (did you mean 'temperature'?)",
        "profiles.support.tools: unknown tool 'search' (declared: weather)",
        "profiles.local.model: required on a responses backend (it is sent with each request)",
    ]


def test_error_message_names_the_file_and_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("profiles:\n  a: {assistant_id: asst_1, backend: nowhere}\nbindings: {default: ghost}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.splitlines()[0] == f"{path}: 2 problem(s)"
    assert "  - profiles.a.backend: unknown backend 'nowhere' (declared: default)" in message
    assert "  - bindings.default: unknown profile 'ghost' (declared: a)" in message


def test_references_are_checked_even_when_other_fields_fail() -> None:
    raw = {"profiles": {"p": {"backend": "nowhere", "tools": ["missing"], "temperature": 7}}}
    assert problems(raw) == [
        "profiles.p.temperature: Input should be less than or equal to 2",
        "profiles.p.backend: unknown backend 'nowhere' (declared: default)",
        "profiles.p.tools: unknown tool 'missing' (declared: none)",
        "profiles.p: needs either assistant_id (an existing assistant) or a definition with model",
    ]


def test_a_reference_to_a_broken_entry_is_not_also_called_unknown() -> None:
    raw = {
        "backends": {"b": {"kind": "assistant"}},
        "tools": {"t": {"url": "ftp://nope"}},
        "profiles": {"p": {"backend": "b", "tools": ["t"], "assistant_id": "asst_1"}, "q": "not a mapping"},
        "bindings": {"default": "q", "slack": {"T1": {"C1": "p"}}},
    }
    found = problems(raw)
    assert [line.split(":")[0] for line in found] == ["backends.b.kind", "tools.t.url", "profiles.q"]


def test_an_unset_variable_is_reported_once_not_again_as_a_bad_value() -> None:
    raw = {"tools": {"t": {"url": "${TOOL_URL}", "secret": "${TOOL_SECRET}"}}, "profiles": {"p": PROFILE}}
    assert problems(raw) == [
        "tools.t.url: environment variable TOOL_URL is not set",
        "tools.t.secret: environment variable TOOL_SECRET is not set",
    ]


# --- keys, YAML ---------------------------------------------------------------------------------

def test_unknown_keys_are_reported_with_their_path_and_a_suggestion() -> None:
    raw = {"profile": {}, "profiles": {"p": PROFILE}, "gateway": {"max_concurent_runs": 3}, "slack": {"zzz": 1}}
    found = problems(raw)
    assert "profile: unknown key (did you mean 'profiles'?)" in found
    assert "gateway.max_concurent_runs: unknown key (did you mean 'max_concurrent_runs'?)" in found
    assert any(line.startswith("slack.zzz: unknown key (expected one of: answer_bots, admins") for line in found)


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    found = load_problems(tmp_path, "profiles:\n  support:\n    assistant_id: [asst_1\n    tools: []\n")
    assert len(found) == 1
    assert found[0].startswith("line 4, column 10: not valid YAML: expected ',' or ']'")


def test_yaml_syntax_error_does_not_chain_pyyaml_quoting_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "backends:\n  b: {api_key: sk-literal-secret-123: x}\n")
    assert_chain_is_empty(info.value)
    assert "sk-literal-secret-123" not in str(info.value)


def test_duplicate_keys_are_problems_not_silently_last_wins(tmp_path: Path) -> None:
    text = "profiles:\n  a: {assistant_id: asst_1}\n  a: {model: gpt-5.1}\nbindings: {default: nope}\n"
    assert load_problems(tmp_path, text) == [
        "profiles.a: duplicate key on line 3 (first on line 2)",
        "bindings.default: unknown profile 'nope' (declared: a)",
    ]


def test_merge_keys_and_x_anchors_are_allowed(tmp_path: Path) -> None:
    text = ("x-common: &common {backend: default, tools: [t], temperature: 0.2}\n"
            "tools: {t: {url: 'http://127.0.0.1:9/t'}}\n"
            "profiles:\n  a: {<<: *common, assistant_id: asst_1, temperature: 0.7}\n")
    config = load(tmp_path, text)
    assert config.profiles["a"].temperature == 0.7
    assert config.profiles["a"].tools == ["t"]


def test_missing_file_and_non_mapping_document(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml", env={})
    assert info.value.problems == ["file not found (set SWITCHBOARD_CONFIG to the config's path)"]
    assert load_problems(tmp_path, "- a\n- b\n") == ["(top level): must be a mapping of sections"]


def test_empty_sections_read_as_null_are_empty(tmp_path: Path) -> None:
    config = load(tmp_path, "tools:\nbackends:\nprofiles:\n  p: {assistant_id: asst_1}\n")
    assert config.tools == {}
    assert set(config.backends) == {"default"}


def test_unquoted_numeric_discord_ids_are_strings(tmp_path: Path) -> None:
    text = ("profiles: {p: {assistant_id: asst_1}}\n"
            "bindings: {discord: {112233445566778899: {998877665544332211: p, default: p}}}\n"
            "discord: {admins: [123456789012345678]}\n")
    config = load(tmp_path, text)
    assert config.bindings.discord == {"112233445566778899": {"998877665544332211": "p", "default": "p"}}
    assert config.discord.admins == ["123456789012345678"]


# --- ${VAR} expansion ---------------------------------------------------------------------------

def test_missing_env_var_is_named_with_its_path() -> None:
    raw = {"backends": {"b": {"api_key": "${B_KEY}"}}, "profiles": {"p": PROFILE}}
    assert problems(raw) == ["backends.b.api_key: environment variable B_KEY is not set"]


def test_env_var_expands_inside_strings_and_lists() -> None:
    raw = {"tools": {"t": {"url": "https://${HOST}/v1/t", "headers": {"Authorization": "Bearer ${TOKEN}"}}},
           "profiles": {"p": {"assistant_id": "${ASSISTANT}", "tools": ["${TOOL}"]}}}
    config = parse_config(raw, source="t", env={"HOST": "tools.internal", "TOKEN": "tok-1", "ASSISTANT": "asst_9",
                                                "TOOL": "t"})
    assert config.tools["t"].url == "https://tools.internal/v1/t"
    assert config.tools["t"].headers["Authorization"].get_secret_value() == "Bearer tok-1"
    assert config.profiles["p"].assistant_id == "asst_9"
    assert config.profiles["p"].tools == ["t"]


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "http://127.0.0.1:11434/v1"),
    ({"LOCAL_URL": ""}, "http://127.0.0.1:11434/v1"),
    ({"LOCAL_URL": "http://ollama:11434/v1"}, "http://ollama:11434/v1"),
])
def test_fallback_is_used_when_var_is_unset_or_empty(env: dict[str, str], expected: str) -> None:
    raw = {"backends": {"local": {"base_url": "${LOCAL_URL:-http://127.0.0.1:11434/v1}"}}, "profiles": {"p": PROFILE}}
    assert parse_config(raw, source="t", env=env).backends["local"].base_url == expected


def test_empty_fallback_leaves_optional_fields_unset() -> None:
    raw = {"backends": {"b": {"base_url": "${B_URL:-}"}},
           "tools": {"t": {"url": "http://127.0.0.1:9/t", "secret": "${T_SECRET:-}"}}, "profiles": {"p": PROFILE}}
    config = parse_config(raw, source="t", env={})
    assert config.backends["b"].base_url is None
    assert config.tools["t"].secret is None


def test_malformed_reference_is_a_problem() -> None:
    raw = {"profiles": {"p": {"assistant_id": "${ASSISTANT", "instructions": "${A:-${B}}"}}}
    found = problems(raw)
    assert found[0].startswith("profiles.p.assistant_id: malformed ${…} reference")
    assert found[1].startswith("profiles.p.instructions: malformed ${…} reference")


# --- cross-references ---------------------------------------------------------------------------

def test_profile_referencing_unknown_tool_and_backend() -> None:
    raw = {"tools": {"known": {"url": "http://127.0.0.1:9/k"}},
           "profiles": {"p": {"assistant_id": "asst_1", "backend": "elsewhere", "tools": ["known", "ghost"]}}}
    assert problems(raw) == [
        "profiles.p.backend: unknown backend 'elsewhere' (declared: default)",
        "profiles.p.tools: unknown tool 'ghost' (declared: known)",
    ]


def test_bindings_to_unknown_profiles_at_every_level() -> None:
    raw = {"profiles": {"p": PROFILE},
           "bindings": {"default": "x1", "slack": {"T1": {"C1": "p", "C2": "x2", "default": "x3"}},
                        "discord": {"G1": {"default": "x4"}}, "console": {"local": {"default": "x5"}}}}
    assert problems(raw) == [
        "bindings.default: unknown profile 'x1' (declared: p)",
        "bindings.slack.T1.C2: unknown profile 'x2' (declared: p)",
        "bindings.slack.T1.default: unknown profile 'x3' (declared: p)",
        "bindings.discord.G1.default: unknown profile 'x4' (declared: p)",
        "bindings.console.local.default: unknown profile 'x5' (declared: p)",
    ]


def test_default_backend_exists_without_being_declared() -> None:
    config = parse_config({"profiles": {"p": PROFILE}}, source="t", env={})
    assert config.backends["default"].kind == "assistants"
    assert config.profiles["p"].backend == "default"


def test_a_declared_default_backend_replaces_the_implicit_one() -> None:
    raw = {"backends": {"default": {"kind": "responses", "state": "previous_response_id"}},
           "profiles": {"p": {"model": "gpt-5.1"}}}
    assert parse_config(raw, source="t", env={}).backends["default"].state == "previous_response_id"


@pytest.mark.parametrize("state", ["conversations", "previous_response_id", "replay"])
def test_responses_backend_profile_without_model(state: str) -> None:
    raw = {"backends": {"r": {"kind": "responses", "state": state}},
           "profiles": {"p": {"backend": "r", "assistant_id": "asst_1"}, "ok": {"backend": "r", "model": "m"}}}
    assert problems(raw) == ["profiles.p.model: required on a responses backend (it is sent with each request)"]


def test_profile_needs_assistant_id_or_model_and_at_least_one_profile() -> None:
    assert problems({"profiles": {"p": {"instructions": "hello"}}}) == [
        "profiles.p: needs either assistant_id (an existing assistant) or a definition with model"]
    assert problems({}) == ["profiles: at least one profile is needed"]


def test_rules_that_span_fields() -> None:
    raw = {"backends": {"a": {"kind": "assistants", "state": "replay"},
                        "r": {"kind": "responses", "replay_max_messages": 10}},
           "tools": {"get weather": {"url": "http://127.0.0.1:9/w"}, "t": {"url": "http://127.0.0.1:9/t"}},
           "profiles": {"p": {"assistant_id": "asst_1", "tools": ["t", "t"],
                              "tool_choice": {"type": "function", "function": {"name": "other"}}}}}
    assert problems(raw) == [
        "backends.a.state: only applies to kind: responses",
        "backends.r.replay_max_messages: only applies to state: replay",
        "tools.get weather: a function name is 1 to 64 letters, digits, _ or -",
        "profiles.p.tools: a tool is listed more than once",
        "profiles.p.tool_choice: function 'other' is not in this profile's tools",
    ]


@pytest.mark.parametrize(("field", "value"), [
    ("response_format", "json"),
    ("response_format", {"type": "yaml"}),
    ("tool_choice", "always"),
    ("truncation_strategy", {"type": "last_messages"}),
    ("builtin_tools", [{"name": "x"}]),
    ("metadata", {f"k{i}": "v" for i in range(15)}),
    ("reasoning_effort", "extreme"),
])
def test_profile_field_shapes_are_checked(field: str, value: Any) -> None:
    found = problems({"profiles": {"p": {"assistant_id": "asst_1", field: value}}})
    assert len(found) == 1 and found[0].startswith(f"profiles.p.{field}: ")


def test_tool_values_are_checked() -> None:
    raw = {"tools": {"t": {"url": "file:///etc/passwd", "parameters": {"type": "string"}, "timeout_s": 601,
                           "max_response_bytes": 0, "secret": "sk-not-whsec"}},
           "redis": {"key_prefix": "{sb}"}, "profiles": {"p": PROFILE}}
    assert [line.split(": ")[0] for line in problems(raw)] == [
        "tools.t.parameters", "tools.t.url", "tools.t.timeout_s", "tools.t.secret", "tools.t.max_response_bytes",
        "redis.key_prefix"]


@pytest.mark.parametrize("secret", [
    "whsec_", "whsec_a", "whsec_not*base64",
    "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # URL-safe: `-` and `_` would be dropped
])
def test_a_tool_secret_must_be_standard_base64(secret: str) -> None:
    raw = {"tools": {"t": {"url": "http://127.0.0.1:9/t", "secret": secret}}, "profiles": {"p": PROFILE}}
    found = problems(raw)
    assert found == ["tools.t.secret: must be whsec_ followed by standard base64 (not URL-safe)"]
    ToolConfig(url="http://127.0.0.1:9/t", secret=secret)  # type: ignore[arg-type]  # the model alone accepts it


# --- secrets ------------------------------------------------------------------------------------

def test_a_bad_secret_value_is_never_echoed() -> None:
    bad_secret, bad_header = "not-a-whsec-value-0123456789", ["sk-header-secret-value"]
    raw = {"tools": {"t": {"url": "https://x.example/t", "secret": bad_secret, "headers": {"X-Key": bad_header}}},
           "backends": {"b": {"api_key": ["sk-api-key-in-a-list"]}}, "profiles": {"p": PROFILE}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="t", env={})
    assert [line.split(": ")[0] for line in info.value.problems] == [
        "backends.b.api_key", "tools.t.secret", "tools.t.headers.X-Key"]
    shown = str(info.value) + repr(info.value)
    for secret in (bad_secret, "sk-header-secret-value", "sk-api-key-in-a-list"):
        assert secret not in shown
    assert_chain_is_empty(info.value)


def test_an_expanded_env_value_is_never_echoed() -> None:
    env = {"PROFILE_NAME": "tok-0123456789abcdef", "API_KEY": "sk-from-env-0123456789"}
    raw = {"backends": {"b": {"api_key": "${API_KEY}", "timeout_s": 0}},
           "profiles": {"p": {"assistant_id": "asst_1", "backend": "b"}}, "bindings": {"default": "${PROFILE_NAME}"}}
    found = problems(raw, env)
    assert found == ["backends.b.timeout_s: Input should be greater than 0",
                     "bindings.default: unknown profile '***' (declared: p)"]
    assert not any(value in line for value in env.values() for line in found)


def test_validation_errors_of_the_models_hide_their_input() -> None:
    with pytest.raises(ValidationError) as info:
        ToolConfig(url="https://x.example", secret="leaky-secret-value")  # type: ignore[arg-type]
    assert "leaky-secret-value" not in str(info.value)


def test_secrets_are_masked_in_the_loaded_config() -> None:
    raw = {"backends": {"b": {"api_key": "${KEY}"}},
           "tools": {"t": {"url": "https://x.example", "secret": WHSEC, "headers": {"Authorization": "Bearer ${KEY}"}}},
           "profiles": {"p": PROFILE}}
    config = parse_config(raw, source="t", env={"KEY": "sk-very-secret-987654"})
    assert "sk-very-secret-987654" not in repr(config) and WHSEC not in repr(config)
    assert config.backends["b"].api_key is not None
    assert config.backends["b"].api_key.get_secret_value() == "sk-very-secret-987654"


# --- the example file ---------------------------------------------------------------------------

EXAMPLE_ENV = {
    "ASSISTANTS_BASE_URL": "https://assistants.example.internal/v1",
    "ASSISTANTS_API_KEY": "partner-key",
    "WEATHER_TOOL_SECRET": WHSEC,
    "WEATHER_API_TOKEN": "weather-token",
    "TICKETS_TOOL_SECRET": WHSEC,
    "TICKETS_API_KEY": "tickets-key",
}


def test_the_example_config_loads_when_its_env_vars_are_set() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    assert {b.kind for b in config.backends.values()} == {"assistants", "responses"}
    responses = [b for b in config.backends.values() if b.kind == "responses"]
    assert {b.state for b in responses} == {"conversations", "previous_response_id", "replay"}
    assert {p.is_definition for p in config.profiles.values()} == {True, False}
    assert config.tools["get_weather"].secret is not None


def test_the_example_config_names_the_env_vars_it_needs() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env={})
    named = [re.fullmatch(r"[\w.-]+: environment variable (\w+) is not set", line) for line in info.value.problems]
    assert {match.group(1) for match in named if match} == set(EXAMPLE_ENV)
    assert all(named), info.value.problems


def _models_used(value: Any, seen: dict[type[BaseModel], set[str]]) -> None:
    if isinstance(value, BaseModel):
        seen.setdefault(type(value), set()).update(value.model_fields_set)
        for name in type(value).model_fields:
            _models_used(getattr(value, name), seen)
    elif isinstance(value, dict):
        for item in value.values():
            _models_used(item, seen)


@pytest.mark.parametrize("model", [Config, BackendConfig, ToolConfig, ProfileConfig, BindingsConfig,
                                   GatewayConfig, RedisConfig, SlackOptions, DiscordOptions, RateLimitConfig,
                                   AccessConfig, SlackAccess, DiscordAccess])
def test_the_example_config_shows_every_option(model: type[BaseModel]) -> None:
    """Each option is set somewhere in the example, or shown in a commented-out line of its own."""
    seen: dict[type[BaseModel], set[str]] = {}
    _models_used(load_config(EXAMPLE, env=EXAMPLE_ENV), seen)
    commented = set(re.findall(r"^\s*# (\w+): ", EXAMPLE.read_text(), flags=re.MULTILINE))
    missing = set(model.model_fields) - seen.get(model, set()) - commented
    assert not missing, f"config/switchboard.example.yaml does not show {model.__name__}: {sorted(missing)}"
