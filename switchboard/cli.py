"""The ``switchboard`` command (SPEC §4)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from core import logs
from core.config import Config, load_config
from core.errors import ConfigError, StoreUnavailable, SwitchboardError
from core.settings import Settings
from switchboard import admin, app
from switchboard.localredis import RedisNotInstalled

# Every Assistants API method warns that the API is deprecated; it is still our first backend.
warnings.filterwarnings(
    "ignore", message="The Assistants API is deprecated in favor of the Responses API", category=DeprecationWarning,
)
warnings.filterwarnings("ignore", message="deprecated$", category=DeprecationWarning)  # client.beta.assistants.*


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Chat-bot gateway: Slack and Discord to assistants.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the gateway: platforms with credentials, HTTP server, workers")
    console = sub.add_parser("console", help="chat with a profile from the terminal")
    console.add_argument("--profile", help="profile to chat with (default: the global binding)")
    demo = sub.add_parser("demo", help="everything local, no credentials needed")
    demo.add_argument("--model", default="gpt-4.1-mini", help="model for the demo profile on a real backend")
    demo.add_argument("--backend", choices=app.DEMO_BACKENDS, default="assistants",
                      help="the API the demo profile uses: assistants, or responses (with Conversations)")
    sub.add_parser("check", help="validate config and reach every dependency")
    assistants = sub.add_parser("assistants", help="assistants defined in config").add_subparsers(
        dest="action", required=True)
    sync_assistants = assistants.add_parser("sync", help="create/update the assistants that profiles define")
    sync_assistants.add_argument("--dry-run", action="store_true", help="print the field-level diff, change nothing")
    sync_assistants.add_argument("--prune", action="store_true",
                                 help="also delete assistants tagged with a profile that no profile defines any more")
    assistants.add_parser("list", help="list the assistants on every backend in use")
    discord = sub.add_parser("discord", help="Discord setup").add_subparsers(dest="action", required=True)
    sync = discord.add_parser("sync", help="register the slash commands (globally, or on one guild for development)")
    sync.add_argument("--guild", type=int, help="guild ID: commands appear there at once (global takes up to an hour)")
    bindings = sub.add_parser("bindings", help="which profile answers where").add_subparsers(
        dest="action", required=True)
    bindings.add_parser("list", help="bindings from config and from admins")
    show = bindings.add_parser("show", help="which profile answers in a place, and why")
    show.add_argument("platform", choices=["slack", "discord", "console"])
    show.add_argument("workspace", help="Slack team ID / Discord guild ID")
    show.add_argument("channel", nargs="?", default="*", help="channel ID (omit for the workspace default)")
    history = bindings.add_parser("history", help="the audit trail of binding changes (chat and CLI), oldest first")
    history.add_argument("--platform", choices=["slack", "discord", "console"])
    history.add_argument("--workspace", help="only this workspace/guild (needs --platform)")
    history.add_argument("--limit", type=int, default=50, help="the latest N changes (0: all kept); default: 50")
    for action in ("set", "unset"):
        b = bindings.add_parser(action, help=f"{action} a run-time binding")
        b.add_argument("platform", choices=["slack", "discord", "console"])
        b.add_argument("workspace", help="Slack team ID / Discord guild ID")
        b.add_argument("channel", nargs="?", default="*", help="channel ID (omit for the workspace default)")
        if action == "set":
            b.add_argument("--profile", required=True)
    return parser


def _load(settings: Settings) -> Config:
    return load_config(settings.config_path)


def _run(coro_factory: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    try:
        return asyncio.run(coro_factory()) or 0
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            print(f"switchboard: environment: {'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
        return 2
    interactive = args.command in ("console", "demo")
    logs.configure(fmt="console" if interactive else settings.log_format,
                   level=logging.WARNING if interactive else logging.INFO,
                   secrets_to_mask=_secret_values(settings))
    try:
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"switchboard: config error in {exc}", file=sys.stderr)
        return 2
    except (StoreUnavailable, app.MissingRedis, RedisNotInstalled) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 3
    except SwitchboardError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "demo":
        return _run(lambda: app.run_demo(settings, model=args.model, backend=args.backend))
    if command == "check":
        return _run(lambda: admin.check(settings))
    config = _load(settings)
    if command == "run":
        return _run(lambda: app.run_gateway(settings, config))
    if command == "console":
        url = app.require_redis_url(settings)
        return _run(lambda: app.run_console(settings, config, profile=args.profile, redis_url=url))
    if command == "assistants":
        return _run(lambda: admin.assistants(settings, config, args.action, dry_run=getattr(args, "dry_run", False),
                                             prune=getattr(args, "prune", False)))
    if command == "bindings":
        return _run(lambda: admin.bindings(settings, config, args))
    if command == "discord":
        return _run(lambda: admin.discord_sync(settings, config, args.guild))
    raise AssertionError(command)


def _secret_values(settings: Settings) -> list[str]:
    values = [settings.openai_api_key, settings.slack_bot_token, settings.slack_signing_secret,
              settings.slack_app_token, settings.discord_bot_token]
    return [v.get_secret_value() for v in values if v is not None]


if __name__ == "__main__":
    raise SystemExit(main())
