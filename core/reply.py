"""Writing one streamed answer through a ``ReplySink``: throttled, split, recoverable.

The writer keeps the whole answer and decides what to write and when; the sink only knows how.
The text is split with ``core.text`` at the sink's ``limit_chars``. A part that is followed by
another part is final: it gets its final text once (``edit(..., final=True)`` when it changed
since it was posted) and is never touched again. Only the last part keeps changing, and the
writer re-splits only from the end of the last final part.

Throttling needs no timer: ``append`` writes when ``min_edit_interval_s`` has passed since the
last write and only buffers otherwise; ``finish`` always writes what is left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from core.ports import ReplySink
from core.text import Part, closing_fence, split_parts

log = logging.getLogger(__name__)

NO_ANSWER_TEXT = "(no answer)"
# What a message left over from an earlier, longer attempt is edited to.
SUPERSEDED_TEXT = "(see above)"

OnPosted = Callable[[int, str], Awaitable[None]]


class ReplyWriter:
    """Writes one answer through ``sink``; ``finish`` or ``fail`` ends it.

    ``on_posted(index, ref)`` is awaited after each new message is posted, so the caller can
    record it. ``existing_refs`` (part index -> message ref) are messages an earlier attempt
    posted: they are edited instead of posted again. Sink errors propagate; ``sink.done()`` is
    awaited exactly once, by the first ``finish``/``fail``, whatever happens. After a ``finish``
    that raised, ``fail`` may still be called to end the answer with an error.
    """

    def __init__(
        self,
        sink: ReplySink,
        *,
        on_posted: OnPosted | None = None,
        existing_refs: Mapping[int, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._on_posted = on_posted
        self._clock = clock
        self.refs: dict[int, str] = dict(existing_refs or {})
        self._chunks: list[str] = []
        self._written: dict[int, str] = {}  # part index -> the text the sink has for it
        self._unsettled: set[int] = set()  # parts whose last write was a non-final edit
        self._frozen = 0  # parts [0, _frozen) are final
        self._cursor = 0  # offset in the text where part _frozen starts
        self._fence: str | None = None  # the code fence open at _cursor
        self._last_write: float | None = None
        self._finished = False
        self._done = False

    @property
    def text(self) -> str:
        """Everything appended so far."""
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return self._chunks[0] if self._chunks else ""

    async def start(self) -> None:
        """Show that the assistant is working."""
        await self._sink.working()

    async def append(self, delta: str) -> None:
        """Add streamed text; writes to the sink only if the edit interval has passed."""
        self._check_open()
        if not delta:
            return
        self._chunks.append(delta)
        now = self._clock()
        if self._last_write is None or now - self._last_write >= self._sink.min_edit_interval_s:
            await self._flush(self.text, final=False)

    async def finish(self) -> None:
        """Write everything as final (a short placeholder if there is no text), then ``sink.done()``."""
        self._check_open()
        try:
            await self._complete(self.text if self.text.strip() else NO_ANSWER_TEXT)
        finally:
            await self._call_done()

    async def fail(self, user_message: str, reference: str) -> None:
        """End the answer with an error line after any text already streamed, then ``sink.done()``.

        If the answer was already completely written (only ``sink.done()`` failed), its parts
        are final and stay as they are.
        """
        try:
            if self._finished:
                log.warning("answer already written; error not shown", extra={"reference": reference})
                return
            self._chunks = [self._with_error_line(user_message, reference)]
            await self._complete(self.text)
        finally:
            await self._call_done()

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("this reply is already finished")

    def _with_error_line(self, user_message: str, reference: str) -> str:
        text = self.text.rstrip()
        line = f"⚠️ {user_message} (ref {reference})"
        if not text:
            return line
        fence = self._open_fence()
        if fence is not None:
            text += "\n" + closing_fence(fence)  # the error line must not render as code
        return f"{text}\n\n{line}"

    def _open_fence(self) -> str | None:
        parts = split_parts(self.text, self._sink.limit_chars, start=self._cursor, fence=self._fence)
        return parts[-1].fence if parts else self._fence

    async def _complete(self, text: str) -> None:
        await self._flush(text, final=True)
        self._finished = True
        await self._retire_leftovers()

    async def _call_done(self) -> None:
        if not self._done:
            self._done = True
            await self._sink.done()

    async def _flush(self, text: str, *, final: bool) -> None:
        """Bring the sink up to ``text``; parts followed by another part (all, if ``final``) become final."""
        now = self._clock()
        parts = split_parts(text, self._sink.limit_chars, start=self._cursor, fence=self._fence)
        for offset, part in enumerate(parts):
            settled = final or offset < len(parts) - 1
            if await self._write(self._frozen, part.text, final=settled):
                self._last_write = now
            if settled:
                self._freeze(part)

    def _freeze(self, part: Part) -> None:
        self._frozen += 1
        self._cursor = part.end
        self._fence = part.fence

    async def _write(self, index: int, text: str, *, final: bool) -> bool:
        """Post or edit part ``index`` unless the sink already has it; whether the sink was called."""
        ref = self.refs.get(index)
        if ref is None:
            ref = await self._sink.post(text, part=index)
            self.refs[index] = ref
            self._written[index] = text
            if self._on_posted is not None:
                await self._on_posted(index, ref)
            return True
        if self._written.get(index) == text and not (final and index in self._unsettled):
            return False
        await self._sink.edit(ref, text, final=final)
        self._written[index] = text
        if final:
            self._unsettled.discard(index)
        else:
            self._unsettled.add(index)
        return True

    async def _retire_leftovers(self) -> None:
        """Messages of an earlier, longer attempt that this answer does not use are emptied."""
        for index in sorted(i for i in self.refs if i >= self._frozen):
            await self._write(index, SUPERSEDED_TEXT, final=True)
