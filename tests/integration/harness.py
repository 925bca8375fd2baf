"""Full-stack test harness: real Redis, the API emulator, real tool endpoints, core.

``open_stack`` yields a running ``Stack``: core's runtime (store, gateway, engine, a worker
task) talking to the emulator through the real ``openai`` SDK over HTTP. Adapters' tests build
their adapter on ``stack.runtime.gateway``; core's tests use ``RecordingSinks``, an in-memory
``ReplySinkFactory`` registered as the ``console`` platform.

``backend`` chooses what answers the ``helper`` profile (one of ``BACKENDS``): the Assistants
API, or the Responses API in one of its three state modes. For ``previous_response_id`` the
emulator has no Conversations API, and for ``replay`` it also stores no responses, so each mode
is proven not to lean on what such servers lack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from core.config import Config, parse_config
from core.demo_tool import DemoToolServer
from core.emulator.assistants import AssistantsEmulator
from core.models import InboundMessage, Place
from core.runtime import Runtime, open_runtime
from core.settings import Settings
from core.store import Pending, Store

TOOL_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXN3aXRjaGJvYXJkLXRlc3Rz"
BACKENDS = ("assistants", "responses:conversations", "responses:previous_response_id", "responses:replay")
RESPONSES_BACKEND = "responses"
"""The backend name the ``helper`` profile uses when ``backend`` is a Responses mode."""


def backend_name(backend: str) -> str:
    return "default" if backend == "assistants" else RESPONSES_BACKEND


@dataclass
class Reply:
    """What a recording sink saw for one message."""

    parts: dict[str, str] = field(default_factory=dict)
    posts: int = 0
    edits: int = 0
    finals: int = 0
    working: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    done_calls: int = 0

    @property
    def text(self) -> str:
        return "\n".join(self.parts[k] for k in sorted(self.parts, key=lambda r: int(r.rsplit("-", 1)[1])))


class RecordingSink:
    def __init__(self, reply: Reply, *, limit_chars: int, prefix: str) -> None:
        self.reply = reply
        self.limit_chars = limit_chars
        self.min_edit_interval_s = 0.0
        self.prefix = prefix

    async def working(self) -> None:
        self.reply.working += 1

    async def post(self, text: str, *, part: int) -> str:
        ref = f"{self.prefix}-{self.reply.posts}"
        self.reply.posts += 1
        self.reply.parts[ref] = text
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        self.reply.edits += 1
        self.reply.finals += int(final)
        self.reply.parts[ref] = text

    async def done(self) -> None:
        self.reply.done_calls += 1
        self.reply.done.set()


class RecordingSinks:
    """``ReplySinkFactory`` that records every answer by message ID, in the order answers began."""

    def __init__(self, *, limit_chars: int = 4000) -> None:
        self.limit_chars = limit_chars
        self.replies: dict[str, Reply] = {}
        self.order: list[str] = []

    async def open(self, *, message: InboundMessage, existing_refs: Mapping[str, str]) -> RecordingSink:
        reply = self.replies.setdefault(message.id, Reply())
        self.order.append(message.id)
        return RecordingSink(reply, limit_chars=self.limit_chars, prefix=message.id)

    def reply(self, message_id: str) -> Reply:
        return self.replies.setdefault(message_id, Reply())


async def begin(store: Store, conversation: str, token: str) -> Pending:
    """What a worker's ``claim`` does, for tests that play a process by hand: the lease taken with
    ``token`` and the inbox head begun (its attempt counted, its record ``starting``)."""
    step = await store.claim(conversation, token, deadline_at=time.time() + 600, entries=[])
    assert step.pending is not None, f"nothing waits in {conversation}"
    return step.pending


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free loopback port: its runner (clean it up) and ``http://127.0.0.1:<port>``."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


class ToolEndpoints:
    """Tool endpoints that misbehave on purpose: 500, hang, plain text, oversized, and an echo."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{kind}", self._handle)
        self._runner, self.base_url = await serve(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        self.calls.append({"kind": kind, "body": await request.json()})
        if kind == "fail":
            return web.json_response({"detail": "boom"}, status=500)
        if kind == "hang":
            await asyncio.sleep(2)  # past the tool timeout (0.5 s), short enough for teardown
        if kind == "text":
            return web.Response(text="plain words, not JSON")
        if kind == "big":
            return web.Response(text="x" * 200_000)
        return web.json_response({"output": {"echo": (await request.json())["arguments"]}})


def stack_config(*, weather_url: str, tools_base: str, extra: dict[str, Any] | None = None,
                 backend: str = "assistants") -> Config:
    broken = {
        name: {"url": f"{tools_base}/{kind}", "timeout_s": 0.5, "max_response_bytes": 10_000,
               "parameters": {"type": "object", "properties": {}}}
        for name, kind in [("fail_tool", "fail"), ("hang_tool", "hang"), ("text_tool", "text"),
                           ("big_tool", "big"), ("echo_tool", "echo")]
    }
    raw: dict[str, Any] = {
        "tools": {"get_weather": {
            "description": "Current weather for a city", "url": weather_url, "secret": TOOL_SECRET,
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]}}, **broken},
        "profiles": {"helper": {"model": "emulator-1", "instructions": "Be helpful.",
                                "tools": ["get_weather", *broken], "backend": backend_name(backend)}},
        "bindings": {"default": "helper"},
        "gateway": {"lease_ttl_s": 5, "run_timeout_s": 20},
    }
    if backend != "assistants":
        raw["backends"] = {RESPONSES_BACKEND: {"kind": "responses", "state": backend.split(":", 1)[1]}}
    for key, value in (extra or {}).items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw, source="(test config)", env={})


@dataclass
class Stack:
    runtime: Runtime
    emulator: AssistantsEmulator
    weather: DemoToolServer
    tools: ToolEndpoints
    sinks: RecordingSinks
    settings: Settings
    backend: str = "assistants"
    """One of ``BACKENDS``."""

    @property
    def state_mode(self) -> str | None:
        """``conversations``, ``previous_response_id``, ``replay``, or None on the Assistants API."""
        return self.backend.split(":", 1)[1] if ":" in self.backend else None

    async def contexts(self) -> int:
        """How many conversation contexts the backend holds: threads, Conversations objects,
        response chains (responses that chain from none), or replayed histories in Redis."""
        responses = self.emulator.responses.state
        if self.state_mode is None:
            return len(self.emulator.state.threads)
        if self.state_mode == "conversations":
            return len(responses.conversations)
        if self.state_mode == "previous_response_id":
            return sum(1 for r in responses.created if r.obj["previous_response_id"] is None)
        return len([key async for key in self.runtime.store.redis.scan_iter(match="*:replay:*")])

    async def send(self, text: str, *, conversation: str = "console:t:c1", event_id: str | None = None,
                   user: str = "U1", profile: str | None = None) -> str:
        """Accept a message as an adapter would; returns its message ID (the original's, if a duplicate)."""
        message = InboundMessage(
            event_id=event_id or uuid.uuid4().hex, conversation=conversation, text=text,
            place=Place(platform="console", workspace="t", channel=conversation, user=user), profile=profile,
        )
        accepted = await self.runtime.gateway.accept(message)
        return accepted.message_id

    async def answer(self, message_id: str, timeout_s: float = 15) -> Reply:
        reply = self.sinks.reply(message_id)
        await asyncio.wait_for(reply.done.wait(), timeout_s)
        return reply

    async def ask(self, text: str, **kwargs: Any) -> Reply:
        return await self.answer(await self.send(text, **kwargs))


@contextlib.asynccontextmanager
async def working(runtime: Runtime) -> AsyncIterator[asyncio.Task[None]]:
    """``runtime``'s worker running as a task; drained and awaited on the way out (a test that
    crashed it on purpose has already ended the task)."""
    runtime.worker.read_block_ms = 200  # quicker teardown: reads are never cancelled
    task = asyncio.create_task(runtime.worker.run())
    try:
        yield task
    finally:
        if not task.done():
            await runtime.worker.drain(0)
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def open_stack(redis_url: str, *, chunks: int = 4, extra_config: dict[str, Any] | None = None,
                     expiry_s: float = 600.0, backend: str = "assistants") -> AsyncIterator[Stack]:
    tools = ToolEndpoints()
    await tools.start()
    try:
        async with AssistantsEmulator(chunks=chunks, expiry_s=expiry_s) as emulator, \
                DemoToolServer(secret=TOOL_SECRET) as weather:
            if backend != "assistants":
                emulator.responses.state.conversations_enabled = backend == "responses:conversations"
                emulator.responses.state.store_enabled = backend != "responses:replay"
            settings = Settings(OPENAI_BASE_URL=emulator.base_url, OPENAI_API_KEY=SecretStr("test-key"),
                                REDIS_URL=redis_url)
            config = stack_config(weather_url=weather.url, tools_base=tools.base_url, extra=extra_config,
                                  backend=backend)
            async with open_runtime(settings, config, redis_url=redis_url) as runtime:
                sinks = RecordingSinks()
                runtime.gateway.register_platform("console", sinks)
                async with working(runtime):
                    yield Stack(runtime, emulator, weather, tools, sinks, settings, backend)
    finally:
        await tools.stop()
