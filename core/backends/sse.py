"""Server-sent events of a streamed backend response, decoded only as far as the backend needs.

The SDK's own stream (``AsyncStream``) validates every event of a run into a pydantic model
(``TypeAdapter.validate_python`` of the whole event union, ~1.5 ms per run). A run sends ~20
events of which a backend uses a handful, so ``EventStream`` splits the body into events and
JSON-decodes only those whose name is wanted; the others cost a ``split`` and a set lookup.

The request itself stays with the SDK (``with_streaming_response``: auth, retries, HTTP errors
as ``openai.APIStatusError``); this module reads the body it returns. ``finish`` reads the body
to its end, so httpx2 puts the connection back in its pool instead of closing it.

Field parsing follows the SSE spec (lines end in LF, CRLF or CR; one optional space after the
colon; ``data`` lines join with LF; a blank line ends an event; comments and unknown fields are
ignored; an event cut off by the end of the body is dropped). Events with no ``event:`` line are
named by their JSON ``type`` (Responses API servers may send only ``data:``). ``[DONE]`` is not
an event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterable, Container
from dataclasses import dataclass
from typing import Any

import httpx2

from core.errors import BackendError

log = logging.getLogger(__name__)

FINISH_TIMEOUT_S = 0.25
"""How long ``finish`` waits for the end of a body after the event the backend waited for; then the
connection is closed. The end follows that event at once (OpenAI: ``[DONE]``, or nothing), so this
only bounds what a server that holds the body open costs each answer (none timed out at 100 msg/s)."""
_DONE = b"[DONE]"


@dataclass(frozen=True, slots=True)
class Event:
    """One wanted event: its name and its ``data`` as a JSON object."""

    name: str
    data: dict[str, Any]


class EventStream:
    """The wanted events of an SSE body, in order (``async for event in stream``).

    ``chunks`` is the body as bytes (e.g. the SDK's ``AsyncAPIResponse.iter_bytes()``); its
    errors (``httpx2.HTTPError``) pass through. A wanted event whose data is not a JSON object
    raises ``BackendError``.
    """

    def __init__(self, chunks: AsyncIterable[bytes], wanted: Container[str]) -> None:
        self._chunks = aiter(chunks)
        self._wanted = wanted
        self._rest = b""
        self._ready: deque[tuple[str, bytes]] = deque()
        self._ended = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            while self._ready:
                event = self._decode(*self._ready.popleft())
                if event is not None:
                    return event
            if self._ended:
                raise StopAsyncIteration
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._ended = True
                self._feed(b"", final=True)
            else:
                self._feed(chunk)

    async def finish(self, timeout_s: float = FINISH_TIMEOUT_S) -> bool:
        """Read the rest of the body without decoding it, so the connection can be reused.

        Called once the backend has the event it waited for (the rest is ``[DONE]`` or nothing).
        False if the body did not end within ``timeout_s`` or broke off: the connection is then
        closed with the response, which costs the next request a connect and nothing else.
        """
        self._ready.clear()
        if self._ended:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                async for _ in self._chunks:
                    pass
        except (TimeoutError, httpx2.HTTPError) as exc:
            # The answer is complete; only the connection's reuse is lost.
            log.debug("backend stream not read to its end: %s", type(exc).__name__)
            return False
        finally:
            self._ended = True
        return True

    def _feed(self, chunk: bytes, *, final: bool = False) -> None:
        """Queue the complete events in ``chunk`` (with what earlier chunks left) as (name, data)."""
        text = self._rest + chunk
        held = b""
        if b"\r" in text:
            if text.endswith(b"\r") and not final:  # its LF may come in the next chunk
                text, held = text[:-1], b"\r"
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = text.split(b"\n\n")
        self._rest = blocks.pop() + held
        for block in blocks:
            if block:
                self._queue(block)

    def _queue(self, block: bytes) -> None:
        name = b""
        data: list[bytes] = []
        for line in block.split(b"\n"):
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"event":
                name = value
            elif field == b"data":
                data.append(value)
        if not data:
            return
        decoded = name.decode("utf-8", "replace")
        if decoded and decoded not in self._wanted:
            return
        self._ready.append((decoded, data[0] if len(data) == 1 else b"\n".join(data)))

    def _decode(self, name: str, raw: bytes) -> Event | None:
        if raw == _DONE:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BackendError(f"backend sent an event that is not JSON ({name or 'unnamed'})") from exc
        if not isinstance(data, dict):
            raise BackendError(f"backend sent an event that is not a JSON object ({name or 'unnamed'})")
        if not name:
            name = str(data.get("type") or "")
            if name not in self._wanted:
                return None
        return Event(name, data)

