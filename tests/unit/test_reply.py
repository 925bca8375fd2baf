"""ReplyWriter against an in-memory sink and a fake clock: throttling, splitting, finality, recovery."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from core.ports import ReplySink
from core.reply import NO_ANSWER_TEXT, SUPERSEDED_TEXT, ReplyWriter
from core.text import split_text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSink:
    """Records every call; refuses what a platform would (too long, edits after the final one)."""

    def __init__(self, *, limit: int = 200, interval: float = 1.0) -> None:
        self.limit_chars = limit
        self.min_edit_interval_s = interval
        self.calls: list[tuple[str, ...]] = []
        self.messages: dict[str, str] = {}
        self.finalized: set[str] = set()
        self.fail_next: BaseException | None = None
        self.posted = 0

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    async def working(self) -> None:
        self.calls.append(("working",))

    async def post(self, text: str, *, part: int) -> str:
        self._maybe_fail()
        assert 0 < len(text) <= self.limit_chars
        self.posted += 1
        ref = f"m{self.posted}"
        self.messages[ref] = text
        self.calls.append(("post", ref, text))
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        self._maybe_fail()
        assert 0 < len(text) <= self.limit_chars
        assert ref not in self.finalized, f"{ref} edited after its final edit"
        self.messages[ref] = text
        self.calls.append(("edit", ref, text, "final" if final else "partial"))
        if final:
            self.finalized.add(ref)

    async def done(self) -> None:
        self.calls.append(("done",))

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]

    def texts(self) -> list[str]:
        return list(self.messages.values())


def make(sink: FakeSink, **kwargs: Any) -> tuple[ReplyWriter, FakeClock]:
    clock = FakeClock()
    port: ReplySink = sink  # the fake implements the port
    return ReplyWriter(port, clock=clock, **kwargs), clock


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


async def test_appends_within_the_interval_are_buffered() -> None:
    sink = FakeSink(limit=2000, interval=1.0)
    writer, clock = make(sink)
    await writer.start()
    for i in range(100):
        clock.now += 0.005
        await writer.append(f"w{i} ")
    assert sink.kinds() == ["working", "post"]
    assert sink.calls[1][2] == "w0"
    clock.now += 1.0
    await writer.append("last")
    assert sink.kinds() == ["working", "post", "edit"]
    assert sink.calls[2] == ("edit", "m1", writer.text.strip(), "partial")
    assert writer.refs == {0: "m1"}


async def test_finish_flushes_the_buffer_and_calls_done_once() -> None:
    sink = FakeSink(limit=2000)
    writer, _ = make(sink)
    await writer.append("Hello")
    await writer.append(", world")
    await writer.finish()
    assert sink.calls[-2:] == [("edit", "m1", "Hello, world", "final"), ("done",)]
    assert sink.kinds().count("done") == 1
    with pytest.raises(RuntimeError):
        await writer.append("more")


async def test_long_answers_are_split_and_earlier_parts_finalized_once() -> None:
    sink = FakeSink(limit=150, interval=1.0)
    writer, clock = make(sink)
    words = [f"word{i}" + ("." if i % 7 == 6 else "") + ("\n\n" if i % 20 == 19 else " ") for i in range(300)]
    for word in words:
        clock.now += 0.3
        await writer.append(word)
    await writer.finish()
    text = "".join(words)
    assert len(sink.messages) > 10
    assert sink.texts() == split_text(text, 150)
    assert squash("".join(sink.texts())) == squash(text)
    edits_per_ref = {ref: [c for c in sink.calls if c[0] == "edit" and c[1] == ref] for ref in sink.messages}
    for ref, edits in edits_per_ref.items():
        assert [c[3] for c in edits].count("final") <= 1
        if edits:
            assert edits[-1][3] == "final", f"{ref} never got its final text"


async def test_one_big_delta_posts_every_part() -> None:
    sink = FakeSink(limit=120)
    writer, _ = make(sink)
    text = "\n\n".join(f"Paragraph {i} has a few words in it." for i in range(20))
    await writer.append(text)
    parts = split_text(text, 120)
    assert sink.kinds() == ["post"] * len(parts)
    assert sink.texts() == parts
    await writer.finish()
    assert sink.kinds() == ["post"] * len(parts) + ["done"]


async def test_whitespace_only_growth_is_not_resent() -> None:
    sink = FakeSink()
    writer, clock = make(sink)
    await writer.append("Answer")
    clock.now += 5
    await writer.append("  \n")
    assert sink.kinds() == ["post"]
    clock.now += 5
    await writer.append("more")
    assert sink.calls[-1] == ("edit", "m1", "Answer  \nmore", "partial")


async def test_a_part_left_partial_gets_a_final_edit_even_if_unchanged() -> None:
    sink = FakeSink()
    writer, clock = make(sink)
    await writer.append("One")
    clock.now += 5
    await writer.append(" two")
    await writer.finish()
    assert sink.calls == [
        ("post", "m1", "One"), ("edit", "m1", "One two", "partial"), ("edit", "m1", "One two", "final"), ("done",),
    ]


async def test_an_empty_answer_still_gets_a_message() -> None:
    sink = FakeSink()
    writer, _ = make(sink)
    await writer.start()
    await writer.append("   ")
    await writer.finish()
    assert sink.calls == [("working",), ("post", "m1", NO_ANSWER_TEXT), ("done",)]


async def test_fail_keeps_the_streamed_text_and_adds_the_reference() -> None:
    sink = FakeSink(limit=2000)
    writer, _ = make(sink)
    await writer.append("Partial answer so far")
    await writer.fail("The assistant service failed to answer.", "ab12cd")
    assert sink.messages == {"m1": "Partial answer so far\n\n⚠️ The assistant service failed to answer. (ref ab12cd)"}
    assert sink.calls[-2][3] == "final" and sink.calls[-1] == ("done",)


async def test_fail_inside_a_code_block_closes_it_first() -> None:
    sink = FakeSink(limit=2000)
    writer, _ = make(sink)
    await writer.append("Try:\n```python\nprint(1)\n")
    await writer.fail("It broke.", "ref1")
    assert sink.messages["m1"] == "Try:\n```python\nprint(1)\n```\n\n⚠️ It broke. (ref ref1)"


async def test_fail_without_text_posts_only_the_error() -> None:
    sink = FakeSink()
    writer, _ = make(sink)
    await writer.fail("Timed out.", "r9")
    assert sink.calls == [("post", "m1", "⚠️ Timed out. (ref r9)"), ("done",)]


async def test_existing_refs_are_edited_not_posted_again() -> None:
    sink = FakeSink(limit=120)
    sink.messages = {"old0": "stale", "old1": "stale", "old2": "stale"}
    posted: list[tuple[int, str]] = []

    async def on_posted(index: int, ref: str) -> None:
        posted.append((index, ref))

    writer, _ = make(sink, existing_refs={0: "old0", 1: "old1", 2: "old2"}, on_posted=on_posted)
    text = "First paragraph of the new answer, long enough. " * 2 + "\n\nSecond paragraph."
    await writer.append(text)
    await writer.finish()
    parts = split_text(text, 120)
    assert len(parts) == 2
    assert sink.kinds().count("post") == 0 and posted == []
    assert sink.messages == {"old0": parts[0], "old1": parts[1], "old2": SUPERSEDED_TEXT}
    assert sink.finalized == {"old0", "old1", "old2"}


async def test_on_posted_reports_each_new_message() -> None:
    sink = FakeSink(limit=100)
    posted: list[tuple[int, str]] = []

    async def on_posted(index: int, ref: str) -> None:
        posted.append((index, ref))

    writer, _ = make(sink, existing_refs={0: "m0"}, on_posted=on_posted)
    await writer.append("alpha " * 30)
    await writer.finish()
    assert posted == [(1, "m1"), (2, "m2")]
    assert writer.refs == {0: "m0", 1: "m1", 2: "m2"}


async def test_done_is_called_once_when_the_sink_fails_and_fail_can_follow() -> None:
    sink = FakeSink()
    writer, _ = make(sink)
    sink.fail_next = ConnectionError("platform down")
    with pytest.raises(ConnectionError):
        await writer.finish()
    assert sink.calls == [("done",)]
    await writer.fail("Could not post.", "ref7")
    assert sink.calls == [("done",), ("post", "m1", "⚠️ Could not post. (ref ref7)")]


async def test_sink_errors_propagate_from_append_and_nothing_is_lost() -> None:
    sink = FakeSink()
    writer, _ = make(sink)
    sink.fail_next = ConnectionError("429")
    with pytest.raises(ConnectionError):
        await writer.append("Hello")
    await writer.append(" again")
    assert sink.calls == [("post", "m1", "Hello again")]


async def test_cancellation_propagates_and_done_is_still_called() -> None:
    sink = FakeSink()
    writer, _ = make(sink)
    sink.fail_next = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await writer.finish()
    assert sink.calls == [("done",)]


async def test_fail_after_a_complete_answer_changes_nothing() -> None:
    sink = FakeSink()
    writer, _ = make(sink)

    async def broken_done() -> None:
        raise ConnectionError("reaction removal failed")

    sink.done = broken_done  # type: ignore[method-assign]
    await writer.append("The whole answer.")
    with pytest.raises(ConnectionError):
        await writer.finish()
    await writer.fail("Something went wrong while answering.", "ref8")
    assert sink.messages == {"m1": "The whole answer."}


async def test_many_tiny_deltas_are_cheap() -> None:
    sink = FakeSink(limit=2000, interval=1.0)
    writer, clock = make(sink)
    for _ in range(20_000):
        clock.now += 0.001
        await writer.append("abcde ")
    await writer.finish()
    assert squash("".join(sink.texts())) == squash("abcde " * 20_000)
    assert len(sink.calls) < 200
