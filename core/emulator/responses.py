"""The Responses API (``/v1/responses``, streamed or not) and the Conversations API
(``/v1/conversations`` + items), mounted on the ``AssistantsEmulator`` server: one base URL
serves both APIs.

    async with AssistantsEmulator() as emulator:
        emulator.responses.state.conversations_enabled = False   # a server without Conversations
        emulator.responses.state.store_enabled = False           # … that stores no responses

Answers come from the same scripted model as the Assistants emulator (``core.emulator.script``)
with the same directives: ``!fail`` (``response.failed``), ``!incomplete`` (cut halfway,
``response.incomplete``), ``!long=``, ``!slow=``, ``!http=``, ``!drop``; ``!expire`` and
``!cancel`` have no Responses equivalent and are ignored. Events are sent in OpenAI's order and
names; a response plays in a tracked task, so shutdown cuts open streams instead of awaiting them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from core.emulator import responses_wire as rw
from core.emulator import script, wire
from core.emulator.responses_state import ResponseRec, ResponsesState
from core.emulator.wire import Obj

log = logging.getLogger(__name__)

Emit = Callable[[Obj | None], None]
DROP: Obj = {"type": "__drop__"}
"""Asks the SSE writer to cut the connection (compared by identity)."""


class ResponsesApi:
    """Routes and the player of responses. ``backend_seconds`` totals scripted sleeping."""

    def __init__(self, *, chunks: int, latency_s: float) -> None:
        self.state = ResponsesState()
        self.chunks = chunks
        self.latency_s = latency_s
        self.backend_seconds = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def mount(self, app: web.Application) -> None:
        """Add the routes to the emulator's app (its middleware parses, records and injects failures)."""
        get, post, delete = web.get, web.post, web.delete
        app.add_routes([
            post("/v1/responses", self.create_response), get("/v1/responses/{rid}", self.get_response),
            delete("/v1/responses/{rid}", self.delete_response),
            get("/v1/responses/{rid}/input_items", self.list_input_items),
            post("/v1/conversations", self.create_conversation),
            get("/v1/conversations/{cid}", self.get_conversation),
            post("/v1/conversations/{cid}", self.update_conversation),
            delete("/v1/conversations/{cid}", self.delete_conversation),
            post("/v1/conversations/{cid}/items", self.create_items),
            get("/v1/conversations/{cid}/items", self.list_items),
            get("/v1/conversations/{cid}/items/{iid}", self.get_item),
            delete("/v1/conversations/{cid}/items/{iid}", self.delete_item),
        ])
        app.on_shutdown.append(self._stop)

    # -- responses ------------------------------------------------------------------------------

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        rec = self.state.create_response(body)
        if not body.get("stream"):
            await self._play(rec, _discard)
            return web.json_response(rec.obj)
        queue: asyncio.Queue[Obj | None] = asyncio.Queue()
        task = asyncio.create_task(self._play(rec, queue.put_nowait), name=f"emulator {rec.id}")
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return await _stream(request, queue)

    async def get_response(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.stored_response(request.match_info["rid"]).obj)

    async def delete_response(self, request: web.Request) -> web.StreamResponse:
        response_id = self.state.stored_response(request.match_info["rid"]).id
        del self.state.stored[response_id]
        return web.json_response(wire.deleted("response", response_id))

    async def list_input_items(self, request: web.Request) -> web.StreamResponse:
        rec = self.state.stored_response(request.match_info["rid"])
        return web.json_response(wire.paginate(rec.context, request.query))

    # -- conversations ----------------------------------------------------------------------------

    async def create_conversation(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.create_conversation(await _body(request)).obj)

    async def get_conversation(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.conversation(request.match_info["cid"]).obj)

    async def update_conversation(self, request: web.Request) -> web.StreamResponse:
        obj = self.state.conversation(request.match_info["cid"]).obj
        obj["metadata"] = (await _body(request)).get("metadata") or {}
        return web.json_response(obj)

    async def delete_conversation(self, request: web.Request) -> web.StreamResponse:
        conversation_id = self.state.conversation(request.match_info["cid"]).obj["id"]
        del self.state.conversations[conversation_id]
        return web.json_response(wire.deleted("conversation", conversation_id))

    async def create_items(self, request: web.Request) -> web.StreamResponse:
        items = self.state.add_items(request.match_info["cid"], (await _body(request)).get("items"))
        return web.json_response(rw.item_list(items))

    async def list_items(self, request: web.Request) -> web.StreamResponse:
        items = self.state.conversation(request.match_info["cid"]).items
        return web.json_response(wire.paginate(items, request.query))

    async def get_item(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.item(request.match_info["cid"], request.match_info["iid"]))

    async def delete_item(self, request: web.Request) -> web.StreamResponse:
        rec = self.state.conversation(request.match_info["cid"])
        item = self.state.item(request.match_info["cid"], request.match_info["iid"])
        rec.items.remove(item)
        return web.json_response(rec.obj)

    # -- playing a response -------------------------------------------------------------------------

    async def _play(self, rec: ResponseRec, emit: Emit) -> None:
        """Emit the response's events in OpenAI's order, then ``None``; ``DROP`` first if it was cut."""
        player = _Player(rec, emit)
        try:
            player.send("response.created", response=rec.obj)
            player.send("response.in_progress", response=rec.obj)
            await self._sleep(self.latency_s)
            await self._answer(rec, player)
            self.state.finish(rec)
        except BaseException:
            emit(DROP)  # a response that did not finish must not look finished to its client
            raise
        finally:
            emit(None)

    async def _answer(self, rec: ResponseRec, player: _Player) -> None:
        if self.state.stream_errors > 0:
            self.state.stream_errors -= 1
            rec.obj.update(status="failed")
            player.send("error", code="server_error", message="The emulator streamed an error (injected).",
                        param=None)
        elif rec.directives.fail:
            error = {"code": "server_error", "message": "The emulator failed this response (!fail)."}
            player.end(rec, "failed", error=error)
        elif rec.reply.calls:
            for call in rec.reply.calls:
                player.function_call(call)
            player.end(rec, "completed")
        else:
            await self._stream_text(rec, player, rec.reply.text)

    async def _stream_text(self, rec: ResponseRec, player: _Player, text: str) -> None:
        message, index = player.open_message()
        chunks = script.split_chunks(text, self.chunks)
        cut = rec.directives.incomplete
        for number, piece in enumerate(chunks[:len(chunks) // 2] if cut else chunks):
            await self._sleep(rec.directives.slow_s / len(chunks))
            player.text_delta(message, index, piece)
            if rec.directives.drop and number == len(chunks) // 2:
                player.emit(DROP)
        player.close_message(message, index, "incomplete" if cut else "completed")
        if cut:
            player.end(rec, "incomplete", incomplete_details={"reason": "max_output_tokens"})
        else:
            player.end(rec, "completed")

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        started = time.monotonic()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.backend_seconds += time.monotonic() - started

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("emulator response task failed", exc_info=task.exception())

    async def _stop(self, app: web.Application) -> None:
        """On shutdown, stop playing responses first so open SSE responses are cut instead of awaited."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Player:
    """Builds a response's output item by item, emitting each event with its sequence number."""

    def __init__(self, rec: ResponseRec, emit: Emit) -> None:
        self.rec = rec
        self.emit = emit
        self._sequence = 0

    def send(self, kind: str, **data: Any) -> None:
        # JSON text now, so the event is a snapshot of objects that change later
        self.emit(json.loads(json.dumps({"type": kind, **data, "sequence_number": self._sequence})))
        self._sequence += 1

    def function_call(self, call: script.PlannedCall) -> None:
        item, index = rw.function_call(call.name, ""), len(self.rec.obj["output"])
        self.rec.obj["output"].append(item)
        self.send("response.output_item.added", output_index=index, item=item)
        for piece in script.split_chunks(call.arguments, 2):
            item["arguments"] += piece
            self.send("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece)
        self.send("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                  name=call.name, arguments=item["arguments"])
        item["status"] = "completed"
        self.send("response.output_item.done", output_index=index, item=item)

    def open_message(self) -> tuple[Obj, int]:
        message, index = rw.assistant_message(), len(self.rec.obj["output"])
        self.rec.obj["output"].append(message)
        self.send("response.output_item.added", output_index=index, item=message)
        message["content"].append(rw.output_text(""))
        self.send("response.content_part.added", item_id=message["id"], output_index=index, content_index=0,
                  part=rw.output_text(""))
        return message, index

    def text_delta(self, message: Obj, index: int, piece: str) -> None:
        message["content"][0]["text"] += piece
        self.send("response.output_text.delta", item_id=message["id"], output_index=index, content_index=0,
                  delta=piece, logprobs=[])

    def close_message(self, message: Obj, index: int, status: str) -> None:
        part = message["content"][0]
        self.send("response.output_text.done", item_id=message["id"], output_index=index, content_index=0,
                  text=part["text"], logprobs=[])
        self.send("response.content_part.done", item_id=message["id"], output_index=index, content_index=0,
                  part=part)
        message["status"] = status
        self.send("response.output_item.done", output_index=index, item=message)

    def end(self, rec: ResponseRec, status: str, **fields: Any) -> None:
        produced = "".join(item.get("arguments", "") + rw.message_text(item) for item in rec.obj["output"])
        prompt = "".join(rw.message_text(item) for item in rec.context)
        rec.obj.update(status=status, completed_at=wire.now() if status == "completed" else None,
                       usage=rw.usage(script.count_tokens(prompt), script.count_tokens(produced)), **fields)
        self.send(f"response.{status}", response=rec.obj)


def _discard(_: Obj | None) -> None:
    """The emit of a response nobody streams."""


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON body (the emulator's middleware already refused one that does not parse)."""
    if not request.body_exists:
        return {}
    body = await request.json()
    return body if isinstance(body, dict) else {}


async def _stream(request: web.Request, queue: asyncio.Queue[Obj | None]) -> web.StreamResponse:
    """Write queued events as SSE until the response ends; cut the connection on ``DROP``."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        while (event := await queue.get()) is not None:
            if event is DROP:
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
    except ConnectionResetError:
        log.debug("SSE client of %s left", request.path)
    return response

