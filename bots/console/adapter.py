"""The console adapter: a terminal chat through the same core as Slack and Discord.

Lines typed are accepted like any chat message (durably, through Redis), answered by the
worker, and streamed back to the terminal; tool calls are shown as they happen.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from collections.abc import Mapping
from typing import TextIO

from core.errors import StoreUnavailable
from core.gateway import Gateway, MessageRejected
from core.models import InboundMessage, Place, ToolCall, ToolOutput

_DIM, _BOLD, _RESET = "\033[2m", "\033[1m", "\033[0m"


class ConsoleSink:
    """Prints an answer as it grows. The console has no message limit worth splitting for."""

    limit_chars = 1_000_000
    min_edit_interval_s = 0.03

    def __init__(self, out: TextIO, finished: asyncio.Event, *, color: bool) -> None:
        self.out = out
        self.finished = finished
        self.color = color
        self._printed: dict[str, str] = {}
        self._ids = itertools.count()

    async def working(self) -> None:
        self._write(self._dim("assistant is working…") + "\n")

    async def post(self, text: str, *, part: int) -> str:
        ref = f"part-{next(self._ids)}"
        self._printed[ref] = ""
        self._show(ref, text)
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        self._show(ref, text)

    async def done(self) -> None:
        self._write("\n")
        self.finished.set()

    async def tool_activity(self, calls: list[ToolCall], outputs: list[ToolOutput]) -> None:
        for call, output in zip(calls, outputs, strict=True):
            mark = "✓" if output.ok else "✗"
            self._write(self._dim(f"  ↳ tool {call.name}({call.arguments}) {mark} {output.output[:300]}") + "\n")

    def _show(self, ref: str, text: str) -> None:
        before = self._printed.get(ref, "")
        if text.startswith(before):
            self._write(text[len(before):])
        else:  # the text was rewritten (e.g. an error note replaced a partial line): show it whole
            self._write("\n" + text)
        self._printed[ref] = text

    def _dim(self, text: str) -> str:
        return f"{_DIM}{text}{_RESET}" if self.color else text

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


class ConsoleAdapter:
    """Registers the console as a platform and runs the read–answer loop."""

    name = "console"

    def __init__(self, *, gateway: Gateway, profile: str | None, out: TextIO = sys.stdout) -> None:
        self.gateway = gateway
        self.profile = profile
        self.out = out
        self.color = out.isatty()
        self.session = uuid.uuid4().hex[:8]
        self._finished: dict[str, asyncio.Event] = {}

    async def open(self, *, message: InboundMessage, existing_refs: Mapping[str, str]) -> ConsoleSink:
        event = self._finished.setdefault(message.id, asyncio.Event())
        return ConsoleSink(self.out, event, color=self.color)

    async def start(self) -> None:
        self.gateway.register_platform("console", self)

    def conversation(self) -> str:
        return f"console:local:{self.profile or 'default'}:{self.session}"

    async def say(self, text: str) -> asyncio.Event | None:
        """Accept one line; returns an event set when its answer is complete (None if refused)."""
        message = InboundMessage(
            event_id=uuid.uuid4().hex, conversation=self.conversation(), text=text, profile=self.profile,
            place=Place(platform="console", workspace="local", channel=self.session, user="you", is_dm=True),
        )
        try:
            await self.gateway.accept(message)
        except MessageRejected as exc:
            self._print(f"! {exc.user_message}")
            return None
        except StoreUnavailable as exc:
            self._print(f"! {exc.user_message}")
            return None
        return self._finished.setdefault(message.id, asyncio.Event())

    async def chat(self, lines: asyncio.StreamReader) -> None:
        """Read lines until EOF or ``/quit``; answer each before reading the next."""
        self._print("Type a message and press Enter. /reset starts a new conversation, /quit leaves.")
        while True:
            self.out.write(f"{_BOLD}you>{_RESET} " if self.color else "you> ")
            self.out.flush()
            raw = await lines.readline()
            if not raw:
                self._print("")
                return
            text = raw.decode(errors="replace").strip()
            if text in ("/quit", "/exit"):
                return
            if text == "/reset":
                await self.gateway.reset(self.conversation())
                self._print("(new conversation)")
                continue
            if text:
                done = await self.say(text)
                if done is not None:
                    await done.wait()

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


async def stdin_reader() -> asyncio.StreamReader:
    """stdin as an asyncio stream, so reading never blocks the event loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader

