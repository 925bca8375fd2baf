"""A local emulator of the OpenAI Assistants API v2 that the unmodified ``openai`` SDK works against.

    async with AssistantsEmulator(chunks=8, latency_s=0.05, expiry_s=600) as emulator:
        client = AsyncOpenAI(base_url=emulator.base_url, api_key="anything")

It answers with a scripted, deterministic "model" (``core.emulator.script``), keeps everything
in memory (``core.emulator.store``) and plays runs in background tasks (``core.emulator.engine``).
Tests observe ``state`` (recorded requests, runs with the model and instructions they used,
``active_run_conflicts``) and ``backend_seconds``, and inject failures with ``fail_next``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from core.emulator import script, wire
from core.emulator.engine import DROP, RunEngine
from core.emulator.responses import ResponsesApi
from core.emulator.store import EmulatorState, RecordedRequest, RunRec
from core.emulator.wire import ApiError, Obj

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY: web.RequestKey[Mapping[str, Any]] = web.RequestKey("body", Mapping)


class AssistantsEmulator:
    """The emulator server: ``start()`` binds and sets ``base_url`` (``http://host:port/v1``).

    ``chunks``: text deltas per answer. ``latency_s``: delay before each run segment's output.
    ``expiry_s``: how long a run waits for tool outputs before it becomes ``expired``.
    """

    def __init__(self, *, chunks: int = 8, latency_s: float = 0.0, expiry_s: float = 600.0) -> None:
        self.state = EmulatorState(expiry_s=expiry_s)
        self.engine = RunEngine(self.state, chunks=chunks, latency_s=latency_s)
        self.base_url = ""
        self._api = _Api(self.state, self.engine)
        self.responses = ResponsesApi(chunks=chunks, latency_s=latency_s)
        """The Responses and Conversations APIs, served at the same base URL."""
        self._runner: web.AppRunner | None = None

    @property
    def backend_seconds(self) -> float:
        """Total seconds spent in scripted latency and ``!slow`` sleeps, over all runs and responses."""
        return self.engine.backend_seconds + self.responses.backend_seconds

    @property
    def connections(self) -> int:
        """How many client TCP connections (distinct client addresses) have sent requests so far."""
        return len(self._api.peers)

    def fail_next(self, status: int, count: int = 1) -> None:
        """The next ``count`` requests answer ``status`` with an OpenAI error body
        (a 429 carries ``retry-after: 0``)."""
        self._api.failures.extend([status] * count)

    def run(self, run_id: str) -> RunRec:
        """A run by ID, with what the emulator used for it (``model``, ``instructions``)."""
        return self.state.runs[run_id]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = self._api.app()
        self.responses.mount(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> AssistantsEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.stop()


class _Api:
    """The routes: each handler translates HTTP to a state or engine call and back."""

    def __init__(self, state: EmulatorState, engine: RunEngine) -> None:
        self.state = state
        self.engine = engine
        self.failures: deque[int] = deque()
        self.peers: set[object] = set()
        """The client (host, port) of every connection a request came on: a reused connection adds none."""

    async def _emulator_runs(self, request: web.Request) -> web.Response:
        """Not OpenAI's: each run's prompt and scripted backend time, for a harness in another process."""
        return web.json_response([{"id": run.id, "prompt": run.prompt, "backend_s": run.backend_s}
                                  for run in self.state.runs.values()])

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.cleanup_ctx.append(self._background)
        app.on_shutdown.append(self._stop_runs)
        get, post, delete = web.get, web.post, web.delete
        app.add_routes([
            get("/_emulator/runs", self._emulator_runs),
            post("/v1/assistants", self.create_assistant), get("/v1/assistants", self.list_assistants),
            get("/v1/assistants/{aid}", self.get_assistant), post("/v1/assistants/{aid}", self.update_assistant),
            delete("/v1/assistants/{aid}", self.delete_assistant),
            post("/v1/threads", self.create_thread), post("/v1/threads/runs", self.create_thread_and_run),
            get("/v1/threads/{tid}", self.get_thread), post("/v1/threads/{tid}", self.update_thread),
            delete("/v1/threads/{tid}", self.delete_thread),
            post("/v1/threads/{tid}/messages", self.create_message),
            get("/v1/threads/{tid}/messages", self.list_messages),
            get("/v1/threads/{tid}/messages/{mid}", self.get_message),
            post("/v1/threads/{tid}/runs", self.create_run), get("/v1/threads/{tid}/runs", self.list_runs),
            get("/v1/threads/{tid}/runs/{rid}", self.get_run),
            post("/v1/threads/{tid}/runs/{rid}/cancel", self.cancel_run),
            post("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs", self.submit_tool_outputs),
            get("/v1/threads/{tid}/runs/{rid}/steps", self.list_steps),
            get("/v1/threads/{tid}/runs/{rid}/steps/{sid}", self.get_step),
        ])
        return app

    # -- assistants ---------------------------------------------------------------------------

    async def create_assistant(self, request: web.Request) -> web.StreamResponse:
        return _json(self.state.create_assistant(request[BODY]))

    async def list_assistants(self, request: web.Request) -> web.StreamResponse:
        return _json(wire.paginate(list(self.state.assistants.values()), request.query))

    async def get_assistant(self, request: web.Request) -> web.StreamResponse:
        return _json(self.state.assistant(request.match_info["aid"]))

    async def update_assistant(self, request: web.Request) -> web.StreamResponse:
        return _json(wire.update_assistant(self.state.assistant(request.match_info["aid"]), request[BODY]))

    async def delete_assistant(self, request: web.Request) -> web.StreamResponse:
        assistant_id = self.state.assistant(request.match_info["aid"])["id"]
        del self.state.assistants[assistant_id]
        return _json(wire.deleted("assistant", assistant_id))

    # -- threads and messages -----------------------------------------------------------------

    async def create_thread(self, request: web.Request) -> web.StreamResponse:
        return _json(self.state.create_thread(request[BODY]).obj)

    async def get_thread(self, request: web.Request) -> web.StreamResponse:
        return _json(self.state.thread(request.match_info["tid"]).obj)

    async def update_thread(self, request: web.Request) -> web.StreamResponse:
        obj = self.state.thread(request.match_info["tid"]).obj
        obj.update({k: v for k, v in request[BODY].items() if k in ("metadata", "tool_resources")})
        return _json(obj)

    async def delete_thread(self, request: web.Request) -> web.StreamResponse:
        thread_id = self.state.thread(request.match_info["tid"]).obj["id"]
        del self.state.threads[thread_id]
        return _json(wire.deleted("thread", thread_id))

    async def create_message(self, request: web.Request) -> web.StreamResponse:
        return _json(self.state.add_message(request.match_info["tid"], request[BODY]))

    async def list_messages(self, request: web.Request) -> web.StreamResponse:
        messages = list(self.state.thread(request.match_info["tid"]).messages.values())
        if run_id := request.query.get("run_id"):
            messages = [m for m in messages if m["run_id"] == run_id]
        return _json(wire.paginate(messages, request.query))

    async def get_message(self, request: web.Request) -> web.StreamResponse:
        return _json(self.state.message(request.match_info["tid"], request.match_info["mid"]))

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, request: web.Request) -> web.StreamResponse:
        run = self.state.create_run(request.match_info["tid"], request[BODY])
        return await self._advance(request, run, prelude=[("thread.run.created", run.obj)])

    async def create_thread_and_run(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        self.state.assistant_for(body)
        thread = self.state.create_thread(body.get("thread") or {})
        run = self.state.create_run(thread.obj["id"], body)
        return await self._advance(
            request, run, prelude=[("thread.created", thread.obj), ("thread.run.created", run.obj)],
        )

    async def submit_tool_outputs(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request)
        self.state.accept_outputs(run, request[BODY].get("tool_outputs"))
        return await self._advance(request, run, prelude=[], resumed=True)

    async def cancel_run(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request)
        if self.state.request_cancel(run):
            self.engine.settle_cancel(run)
        return _json(run.obj)

    async def get_run(self, request: web.Request) -> web.StreamResponse:
        return _json(self._run(request).obj)

    async def list_runs(self, request: web.Request) -> web.StreamResponse:
        thread = self.state.thread(request.match_info["tid"])
        return _json(wire.paginate([self.state.runs[r].obj for r in thread.run_ids], request.query))

    async def list_steps(self, request: web.Request) -> web.StreamResponse:
        return _json(wire.paginate(self._run(request).steps, request.query))

    async def get_step(self, request: web.Request) -> web.StreamResponse:
        step_id = request.match_info["sid"]
        step = next((s for s in self._run(request).steps if s["id"] == step_id), None)
        if step is None:
            raise wire.not_found("run step", step_id)
        return _json(step)

    def _run(self, request: web.Request) -> RunRec:
        return self.state.run(request.match_info["tid"], request.match_info["rid"])

    async def _advance(
        self, request: web.Request, run: RunRec, *, prelude: list[tuple[str, Obj]], resumed: bool = False,
    ) -> web.StreamResponse:
        """Play the run's next segment: streamed to this request, or in the background."""
        if not request[BODY].get("stream"):
            response = _json(run.obj)
            self.engine.start(run, resumed=resumed)
            return response
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        for event, data in prelude:
            queue.put_nowait((event, json.dumps(data)))
        self.engine.start(run, queue.put_nowait, resumed=resumed)
        return await _stream_events(request, queue)

    # -- cross-cutting --------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Expire overdue runs, parse the body, inject failures, map errors, record the request."""
        self.state.expire_due()
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername"))
        body: Any = None
        try:
            body = await _json_body(request)
            request[BODY] = body if isinstance(body, dict) else {}
            injected = self.failures.popleft() if self.failures else _http_directive(request[BODY])
            if injected is not None:
                raise wire.error_for_status(injected)
            response = await handler(request)
        except ApiError as exc:
            response = _error(exc)
        except web.HTTPException as exc:
            response = _error(ApiError(exc.status, f"{request.method} {request.path}: {exc.reason}"))
        self.state.requests.append(RecordedRequest(request.method, request.path, response.status, body))
        return response

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        """The expiry sweep lives as long as the app."""
        sweeper = asyncio.create_task(self._sweep(), name="emulator expiry sweep")
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper

    async def _stop_runs(self, app: web.Application) -> None:
        """On shutdown, stop playing runs first so open SSE responses are cut instead of awaited."""
        await self.engine.close()

    async def _sweep(self) -> None:
        interval = min(1.0, max(0.01, self.state.expiry_s / 4))
        while True:
            await asyncio.sleep(interval)
            self.state.expire_due()


async def _stream_events(request: web.Request, queue: asyncio.Queue[tuple[str, str] | None]) -> web.StreamResponse:
    """Write queued events as SSE until the segment ends, then ``done``; cut the connection on DROP.
    A client that leaves ends only this response: the run goes on."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        while (item := await queue.get()) is not None:
            if item[0] == DROP:
                _cut(request)
                return response
            await response.write(f"event: {item[0]}\ndata: {item[1]}\n\n".encode())
        await response.write(b"event: done\ndata: [DONE]\n\n")
        await response.write_eof()
    except ConnectionResetError:
        log.debug("SSE client of %s left; the run goes on in the background", request.path)
    return response


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request: {exc.msg}.") from exc


def _http_directive(body: Mapping[str, Any]) -> int | None:
    """The ``!http=<status>`` of any message text the request carries."""
    for text in _message_texts(body):
        status = script.parse_directives(text).http_status
        if status is not None:
            return status
    return None


def _message_texts(body: Mapping[str, Any]) -> list[str]:
    thread = body.get("thread")
    messages: list[Any] = [body] if "role" in body else []
    for holder, key in ((body, "additional_messages"), (body, "messages"), (thread, "messages")):
        if isinstance(holder, Mapping) and isinstance(holder.get(key), list):
            messages.extend(holder[key])
    texts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        texts.extend(p if isinstance(p, str) else str(p.get("text", "")) for p in parts if isinstance(p, str | dict))
    return texts


def _json(obj: Obj) -> web.Response:
    return web.json_response(obj)


def _error(exc: ApiError) -> web.Response:
    headers = {"retry-after": "0"} if exc.status == 429 else None
    return web.json_response(exc.body(), status=exc.status, headers=headers)
