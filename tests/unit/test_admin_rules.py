"""Pure rules of the admin features: allowlists, ``use`` arguments, rate-limit settings, reload comparisons."""

from __future__ import annotations

import pytest

from core.access import is_allowed
from core.commands import USE_USAGE, UseRequest, parse_use
from core.config import AccessConfig, RateLimit, parse_config, parse_rate
from core.errors import ConfigError
from core.models import Place
from core.reload import restart_needed, unavailable_backends

ACCESS = AccessConfig.model_validate({
    "slack": {"workspaces": ["T1"], "channels": ["C1"], "dms": True},
    "discord": {"guilds": ["111"], "dms": False},
})


@pytest.mark.parametrize(("place", "allowed"), [
    (Place(platform="slack", workspace="T1", channel="C1", user="U"), True),
    (Place(platform="slack", workspace="T1", channel="C2", user="U"), False),
    (Place(platform="slack", workspace="T2", channel="C1", user="U"), False),
    (Place(platform="slack", workspace="T1", channel="D1", user="U", is_dm=True), True),
    (Place(platform="slack", workspace="T2", channel="D1", user="U", is_dm=True), False),
    (Place(platform="discord", workspace="111", channel="any", user="U"), True),
    (Place(platform="discord", workspace="222", channel="any", user="U"), False),
    (Place(platform="discord", workspace="", channel="dm", user="U", is_dm=True), False),
    (Place(platform="console", workspace="x", channel="y", user="U"), True),
])
def test_allowlists(place: Place, allowed: bool) -> None:
    assert is_allowed(ACCESS, place) is allowed


def test_everything_is_allowed_by_default() -> None:
    places = [Place(platform="slack", workspace="T9", channel="C9", user="U"),
              Place(platform="discord", workspace="", channel="dm", user="U", is_dm=True)]
    assert all(is_allowed(AccessConfig(), p) for p in places)


@pytest.mark.parametrize(("args", "parsed"), [
    (["ops"], UseRequest("ops", workspace=False)),
    (["ops", "--workspace"], UseRequest("ops", workspace=True)),
    (["--server", "ops"], UseRequest("ops", workspace=True)),
    (["--clear"], UseRequest(None, workspace=False)),
    (["--clear", "--guild"], UseRequest(None, workspace=True)),
    ([], USE_USAGE), (["a", "b"], USE_USAGE), (["--clear", "ops"], USE_USAGE), (["ops", "--all"], USE_USAGE),
])
def test_use_arguments(args: list[str], parsed: UseRequest | str) -> None:
    assert parse_use(args) == parsed


def test_rate_forms() -> None:
    assert parse_rate("10/minute") == RateLimit(10, 60)
    assert parse_rate("5 / 30s") == RateLimit(5, 30)
    assert parse_rate("100/hours") == RateLimit(100, 3600)
    assert str(RateLimit(2, 60)) == "2 per minute" and str(RateLimit(5, 30)) == "5 per 30 s"


def test_bad_rate_limits_are_config_problems() -> None:
    raw = {"profiles": {"p": {"model": "m", "rate_limit": {"per_user": "lots", "per_channel": "0/minute",
                                                           "per_day": "1/day"}}},
           "access": {"slack": {"workspace": ["T1"]}}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="t", env={})
    assert sorted(info.value.problems) == [
        "access.slack.workspace: unknown key (did you mean 'workspaces'?)",
        "profiles.p.rate_limit.per_channel: allows 1 to 10000 messages in a window of 1 second to 1 day",
        "profiles.p.rate_limit.per_day: unknown key (expected one of: per_user, per_channel)",
        "profiles.p.rate_limit.per_user: must be N/unit, e.g. 10/minute, 100/hour or 5/30s",
    ]


def test_reload_names_what_needs_a_restart() -> None:
    old = parse_config({"profiles": {"p": {"model": "m"}}}, source="t", env={})
    new = parse_config({"profiles": {"p": {"model": "m"}, "q": {"backend": "b", "model": "m"}},
                        "backends": {"default": {"timeout_s": 5}, "b": {"kind": "responses"}},
                        "discord": {"message_content": False}, "gateway": {"lease_ttl_s": 4, "run_timeout_s": 9}},
                       source="t", env={})
    assert restart_needed(old, new) == ["backends.default", "gateway.lease_ttl_s", "discord.message_content"]
    assert unavailable_backends(new, {"default"}) == [
        "profiles.q.backend: backend 'b' is not running in this process (a new backend needs a restart)"]
