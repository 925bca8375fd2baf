"""``core.backends.sse.EventStream``: SSE framing per the spec, only wanted events decoded, and
``finish`` reading a body to its end (what lets httpx2 reuse the connection)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import httpx2
import pytest

from core.backends.sse import Event, EventStream
from core.errors import BackendError

WANTED = frozenset({"thread.run.created", "thread.message.delta", "response.output_text.delta", "error"})


class Body:
    """A body as chunks, recording how far it was read; ``then`` runs after the last chunk."""

    def __init__(self, chunks: Iterable[bytes], *, then: BaseException | float | None = None) -> None:
        self.chunks = list(chunks)
        self.then = then
        self.read = 0
        self.ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk
        if isinstance(self.then, BaseException):
            raise self.then
        if isinstance(self.then, float):
            await asyncio.sleep(self.then)
        self.ended = True


async def events(*chunks: bytes, wanted: frozenset[str] = WANTED) -> list[Event]:
    return [event async for event in EventStream(Body(chunks), wanted)]


async def test_named_events_are_decoded_and_unwanted_ones_skipped() -> None:
    body = (b'event: thread.run.created\ndata: {"id": "run_1"}\n\n'
            b'event: thread.run.step.created\ndata: {not json, and never decoded}\n\n'
            b'event: thread.message.delta\ndata: {"delta": "hi"}\n\n'
            b'event: done\ndata: [DONE]\n\n')
    assert await events(body) == [Event("thread.run.created", {"id": "run_1"}),
                                  Event("thread.message.delta", {"delta": "hi"})]


async def test_events_split_anywhere_across_chunks() -> None:
    body = (b'event: thread.run.created\ndata: {"id": "run_1"}\n\n'
            b'event: thread.message.delta\r\ndata: {"delta": "\xc3\xa9t\xc3\xa9"}\r\n\r\n')
    whole = await events(body)
    assert whole == [Event("thread.run.created", {"id": "run_1"}), Event("thread.message.delta", {"delta": "été"})]
    for size in (1, 2, 3, 7):
        assert await events(*(body[i:i + size] for i in range(0, len(body), size))) == whole


async def test_line_endings_comments_fields_and_multiline_data() -> None:
    body = (b': a comment\r'
            b'event:error\r'
            b'id: 7\r'
            b'retry: 100\r'
            b'data: {"message":\r'
            b'data:  "boom"}\r\r')
    # CR alone ends lines; no space after the colon is fine; data lines join with LF
    assert await events(body) == [Event("error", {"message": "boom"})]


async def test_a_cr_at_a_chunk_end_then_lf_is_one_line_end() -> None:
    assert await events(b'event: error\r', b'\ndata: {"a": 1}\r', b'\n\r', b'\n') == [Event("error", {"a": 1})]


async def test_unnamed_events_are_named_by_their_type() -> None:
    body = (b'data: {"type": "response.output_text.delta", "delta": "x"}\n\n'
            b'data: {"type": "response.output_item.added"}\n\n'
            b'data: [DONE]\n\n')
    assert await events(body) == [Event("response.output_text.delta",
                                         {"type": "response.output_text.delta", "delta": "x"})]


async def test_an_event_cut_off_by_the_end_of_the_body_is_dropped() -> None:
    assert await events(b'event: error\ndata: {"a": 1}\n\nevent: error\ndata: {"b": 2}\n') == [
        Event("error", {"a": 1})]


async def test_events_without_data_are_ignored() -> None:
    assert await events(b'event: error\n\n: keep-alive\n\n') == []


@pytest.mark.parametrize("data", [b"{oops", b"[1, 2]", b'"text"'])
async def test_a_wanted_event_that_is_not_a_json_object_is_a_backend_error(data: bytes) -> None:
    with pytest.raises(BackendError, match="error"):
        await events(b"event: error\ndata: " + data + b"\n\n")


async def test_transport_errors_pass_through() -> None:
    stream = EventStream(Body([b'event: error\ndata: {}\n\n'], then=httpx2.RemoteProtocolError("cut")), WANTED)
    assert await anext(stream) == Event("error", {})
    with pytest.raises(httpx2.RemoteProtocolError):
        await anext(stream)


async def test_finish_reads_the_body_to_its_end_without_decoding() -> None:
    body = Body([b'event: thread.run.created\ndata: {"id": "r"}\n\n',
                 b'event: thread.message.delta\ndata: {broken\n\n', b'event: done\ndata: [DONE]\n\n'])
    stream = EventStream(body, WANTED)
    assert (await anext(stream)).name == "thread.run.created"
    assert not body.ended
    assert await stream.finish()
    assert body.ended and body.read == 3
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert await stream.finish()  # idempotent


async def test_finish_gives_up_on_a_body_that_does_not_end() -> None:
    body = Body([b'event: error\ndata: {}\n\n'], then=30.0)
    stream = EventStream(body, WANTED)
    await anext(stream)
    assert not await stream.finish(timeout_s=0.05)
    assert not body.ended


async def test_finish_reports_a_body_that_broke_off() -> None:
    stream = EventStream(Body([b'event: error\ndata: {}\n\n'], then=httpx2.ReadError("reset")), WANTED)
    await anext(stream)
    assert not await stream.finish()
