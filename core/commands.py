"""The ``/assistant`` command, once for every platform (SPEC §8).

Adapters parse nothing: they pass the text after the command and get back Markdown to show
ephemerally. Rights for admin subcommands are checked by the adapter on the platform, through
``is_admin``, at the moment of the call; a refused call changes nothing.

``use <profile>`` binds the profile to this channel, ``use <profile> --workspace`` makes it the
workspace's (Slack) or server's (Discord) default, ``use --clear [--workspace]`` removes that
choice. Each change is audited (``core.audit``) and applies to the next message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core import access
from core.audit import WORKSPACE, BindingChange
from core.bindings import Binding
from core.gateway import Gateway
from core.models import Place

HELP = """\
*/assistant* — which assistant answers here
• `show` — the profile answering in this channel, and where that choice comes from
• `list` — the profiles you can choose from
• `reset` — forget this conversation: the next message starts a fresh one
• `use <profile>` — (admins) choose the profile for this channel; add `--workspace` for the whole \
workspace/server; `use --clear` removes the choice
• `help` — this text"""

USE_USAGE = ("Usage: `use <profile>` for this channel, `use <profile> --workspace` for the whole workspace/server, "
             "`use --clear` (or `use --clear --workspace`) to remove that choice.")

_SOURCE = {
    "channel": "bound to this channel",
    "workspace": "the default for this workspace/server",
    "global": "the global default",
}
_ADMINS = {
    "slack": "workspace admins and owners, and the people and user groups named in the config "
             "(`slack.admins`, `slack.admin_groups`)",
    "discord": "people with the Manage Server permission, and the people named in the config (`discord.admins`)",
}
_WORKSPACE_FLAGS = frozenset({"--workspace", "--server", "--guild"})
_CLEAR_FLAGS = frozenset({"--clear", "--unset"})
_NEEDS_PLACE = frozenset({"show", "reset", "use"})


@dataclass(frozen=True)
class CommandContext:
    place: Place
    conversation: str | None
    """The conversation ``reset`` acts on; None where each new message already starts one."""
    is_admin: Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class UseRequest:
    profile: str | None
    """None: remove the choice (``--clear``)."""
    workspace: bool


async def assistant_command(gateway: Gateway, text: str, ctx: CommandContext) -> str:
    """Run ``/assistant <text>`` and return the Markdown answer."""
    words = text.split()
    sub = words[0].lower() if words else "help"
    if sub in _NEEDS_PLACE and not gateway.allowed_here(ctx.place):
        return access.refusal(ctx.place)
    if sub == "show":
        return await _show(gateway, ctx)
    if sub == "list":
        return _list(gateway)
    if sub == "reset":
        if ctx.conversation is None:
            return "Nothing to reset here: every new @mention in this channel starts a new conversation."
        await gateway.reset(ctx.conversation)
        return "Done: the next message here starts a new conversation."
    if sub == "use":
        return await _use(gateway, words[1:], ctx)
    if sub == "help":
        return HELP
    return f"Unknown subcommand `{sub}`.\n\n{HELP}"


async def _show(gateway: Gateway, ctx: CommandContext) -> str:
    binding = await gateway.binding(ctx.place, fresh=True)
    origin = " (set by an admin)" if binding.origin == "runtime" else " (from the config file)"
    return f"*{binding.profile}* answers here: {_SOURCE[binding.source]}{origin}."


def _list(gateway: Gateway) -> str:
    lines = []
    for name, profile in gateway.config.profiles.items():
        what = profile.description or profile.name or profile.model or profile.assistant_id or ""
        lines.append(f"• `{name}`" + (f" — {what}" if what else ""))
    return "Profiles:\n" + "\n".join(lines)


def parse_use(args: list[str]) -> UseRequest | str:
    """The request in ``use``'s arguments, or the usage text when they make no sense."""
    flags = {a.lower() for a in args if a.startswith("--")}
    names = [a for a in args if not a.startswith("--")]
    unknown = flags - _WORKSPACE_FLAGS - _CLEAR_FLAGS
    clear = bool(flags & _CLEAR_FLAGS)
    if unknown or len(names) > 1 or (clear and names) or (not clear and not names):
        return USE_USAGE
    return UseRequest(profile=names[0] if names else None, workspace=bool(flags & _WORKSPACE_FLAGS))


def _channel_for(place: Place, request: UseRequest) -> str:
    """The binding's channel (``*`` for the workspace default), or "" where nothing can be bound."""
    if place.platform == "discord" and not place.workspace:
        return ""  # a Discord DM belongs to no server
    if request.workspace:
        return WORKSPACE
    return "" if place.is_dm else place.channel


async def _use(gateway: Gateway, args: list[str], ctx: CommandContext) -> str:
    request = parse_use(args)
    if isinstance(request, str):
        return request
    place = ctx.place
    channel = _channel_for(place, request)
    if not channel:
        return ("Choices are made per channel or per workspace/server, not in a direct message"
                + (": add `--workspace` to choose this workspace's default." if place.workspace else "."))
    if not await ctx.is_admin():
        who = _ADMINS.get(place.platform, "admins")
        return f"Only {who} can choose the assistant here. Nothing changed."
    profiles = gateway.config.profiles
    if request.profile is not None and request.profile not in profiles:
        known = ", ".join(f"`{name}`" for name in profiles)
        return f"There is no profile `{request.profile}`. Profiles: {known}. Nothing changed."
    before = await gateway.binding(place, fresh=True)
    change = await gateway.binding_log.change(platform=place.platform, workspace=place.workspace, channel=channel,
                                              profile=request.profile, actor=place.user, via="chat")
    after = await gateway.binding(place, fresh=True)
    return _describe(gateway, request, change, before, after)


def _describe(gateway: Gateway, request: UseRequest, change: BindingChange | None, before: Binding,
              after: Binding) -> str:
    scope = "this workspace/server" if request.workspace else "this channel"
    if change is None:
        if request.profile is None:
            return f"Nothing changed: {scope} had no choice of its own."
        return f"Nothing changed: `{request.profile}` was already chosen for {scope}."
    if request.profile is None:
        lines = [f"Done: the choice for {scope} (`{change.old}`) is removed."]
    else:
        was = f" (it was `{change.old}`)" if change.old else ""
        lines = [f"Done: `{request.profile}` is now chosen for {scope}{was}."]
    lines.append(f"Here, *{after.profile}* answers from the next message on: {_SOURCE[after.source]}.")
    profiles = gateway.config.profiles
    old_backend = profiles[before.profile].backend if before.profile in profiles else None
    if after.profile != before.profile and old_backend != profiles[after.profile].backend:
        lines.append(f"`{after.profile}` runs on another backend: conversations here continue there in a new thread.")
    return "\n".join(lines)
