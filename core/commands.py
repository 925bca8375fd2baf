"""The ``/assistant`` command, once for every platform (SPEC §8).

Adapters parse nothing: they pass the text after the command and get back Markdown to show
ephemerally. Rights for admin subcommands are checked by the adapter on the platform, through
``is_admin``, at the moment of the call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.gateway import Gateway
from core.models import Place

HELP = """\
*/assistant* — which assistant answers here
• `show` — the profile answering in this channel, and where that choice comes from
• `list` — the profiles you can choose from
• `reset` — forget this conversation: the next message starts a fresh one
• `use <profile>` — (admins) choose the profile for this channel
• `help` — this text"""

_SOURCE = {
    "channel": "bound to this channel",
    "workspace": "the default for this workspace/server",
    "global": "the global default",
}


@dataclass(frozen=True)
class CommandContext:
    place: Place
    conversation: str | None
    """The conversation ``reset`` acts on; None where each new message already starts one."""
    is_admin: Callable[[], Awaitable[bool]]


async def assistant_command(gateway: Gateway, text: str, ctx: CommandContext) -> str:
    """Run ``/assistant <text>`` and return the Markdown answer."""
    words = text.split()
    sub = words[0].lower() if words else "help"
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
        return "Choosing a profile per channel is not available yet: an admin can set `bindings` in the config."
    if sub == "help":
        return HELP
    return f"Unknown subcommand `{sub}`.\n\n{HELP}"


async def _show(gateway: Gateway, ctx: CommandContext) -> str:
    binding = await gateway.binding(ctx.place)
    origin = " (set by an admin)" if binding.origin == "runtime" else " (from the config file)"
    return f"*{binding.profile}* answers here: {_SOURCE[binding.source]}{origin}."


def _list(gateway: Gateway) -> str:
    lines = []
    for name, profile in gateway.config.profiles.items():
        what = profile.description or profile.name or profile.model or profile.assistant_id or ""
        lines.append(f"• `{name}`" + (f" — {what}" if what else ""))
    return "Profiles:\n" + "\n".join(lines)
