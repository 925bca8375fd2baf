"""split_text: parts never exceed the limit, code fences stay valid, nothing is lost, cuts are stable."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.text import MIN_LIMIT, split_parts, split_text

# An independent reading of the fence rules documented in core.text (CommonMark backtick fences,
# 3 to 10 backticks, at most 3 spaces of indent, at most 40 characters before trailing whitespace).
FENCE = re.compile(r" {0,3}(`{3,10})([^`]*)")


def fence_lines(text: str) -> tuple[list[str], str | None]:
    """The lines of ``text`` that are not fence lines, and the fence still open at its end."""
    content: list[str] = []
    opened: str | None = None
    for line in text.split("\n"):
        match = FENCE.fullmatch(line) if len(line.rstrip()) <= 40 else None
        if match and opened is None:
            opened = match.group(1)
        elif match and not match.group(2).strip() and len(match.group(1)) >= len(opened or ""):
            opened = None
        else:
            content.append(line)
    return content, opened


def squash(text: str) -> str:
    """The text without fence lines and without any whitespace."""
    return re.sub(r"\s+", "", "\n".join(fence_lines(text)[0]))


WORDS = [
    "a", "word", "Hello", "world.", "end!", "why?", "(quoted.)", "ünïcödé", "日本語。", "👍", "👨‍👩‍👧",
    "🇫🇷", "e\u0301", "`code`", "``", "```", "x```", "a\xa0b", "…", "-", "*bold*", "https://example.com/a?b=c",
]
PIECES = st.one_of(
    st.sampled_from(WORDS).map(lambda w: w + " "),
    st.sampled_from(WORDS),
    st.sampled_from(["\n", "\r\n", "\n\n", "\n   \n", " ", "\t", "  "]),
    st.sampled_from(["\n```\n", "\n```python\n", "\n````\n", "\n  ```js\n", "\n```\r\n", "```", "\n```x`y\n"]),
    st.sampled_from(["    indented code line\n", "\tdef f(x):\n", "        return x  # comment\n"]),
    st.integers(1, 400).map(lambda n: "y" * n),
    st.integers(1, 60).map(lambda n: " " * n),
    st.text(max_size=30),
)
LINES = st.one_of(
    st.sampled_from(["```", "```python", "````", "  ```js", "```   ", "``", "```x`", "````md", "    ```", ""]),
    st.integers(0, 80).map(lambda n: "```py" + " " * n + "z"),
    st.integers(0, 80).map(lambda n: "```" + " " * n),
    st.integers(0, 120).map(lambda n: "    code = line(" + "q" * n + ")"),
    st.integers(0, 120).map(lambda n: "Prose goes on. " * (n // 15) + "end."),
)
TEXTS = st.one_of(st.lists(PIECES, max_size=120).map("".join), st.lists(LINES, max_size=60).map("\n".join))
LIMITS = st.integers(MIN_LIMIT, 400)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(TEXTS, LIMITS)
def test_parts_fit_the_limit_and_keep_fences_balanced(text: str, limit: int) -> None:
    for part in split_text(text, limit):
        assert 1 <= len(part) <= limit
        assert part.strip(), "no empty parts"
        assert part == part.rstrip() and not part.startswith(("\n", "\r")), "whitespace stripped at cuts"
        assert fence_lines(part)[1] is None, f"part ends inside a code block: {part!r}"


@FAST
@given(TEXTS, LIMITS)
def test_content_is_kept_in_order(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert "".join(squash(part) for part in parts) == squash(text)


@FAST
@given(TEXTS, LIMITS)
def test_parts_are_the_text_cut_at_whitespace(text: str, limit: int) -> None:
    """Without the fence lines a split adds, the parts are the text itself, in order, with only
    whitespace between them: whitespace inside a part (code indentation) is untouched."""
    parts = split_parts(text, limit)
    cursor = 0
    for index, part in enumerate(parts):
        body = part.text
        if index > 0 and parts[index - 1].fence is not None:
            body = body.split("\n", 1)[1]
        if part.fence is not None:
            body = body.rsplit("\n", 1)[0]
        found = text.find(body, cursor)
        assert found >= 0 and not text[cursor:found].strip(), (body, text[cursor:])
        cursor = found + len(body)
    assert not text[cursor:].strip()


@FAST
@given(TEXTS, TEXTS, LIMITS)
def test_earlier_parts_do_not_change_as_text_grows(text: str, more: str, limit: int) -> None:
    before = split_text(text, limit)
    after = split_text(text + more, limit)
    settled = max(len(before) - 1, 0)
    assert after[:settled] == before[:settled]


@FAST
@given(TEXTS, LIMITS)
def test_resuming_at_a_part_boundary_gives_the_same_parts(text: str, limit: int) -> None:
    parts = split_parts(text, limit)
    for index, part in enumerate(parts):
        assert split_parts(text, limit, start=part.end, fence=part.fence) == parts[index + 1:]


def test_paragraphs_are_cut_at_blank_lines() -> None:
    paragraphs = [" ".join(f"{name}{i}." for i in range(20)) for name in ("alpha", "beta", "gamma")]
    assert all(100 < len(p) <= 200 for p in paragraphs)
    assert split_text("\n\n".join(paragraphs), 300) == paragraphs


def test_short_text_is_one_part_and_blank_text_none() -> None:
    assert split_text("  hello\nworld  \n\n", 2000) == ["  hello\nworld"]
    assert split_text(" \n\t\n", 2000) == []
    assert split_text("", 2000) == []


def test_lines_then_sentences_then_spaces() -> None:
    line_cut = split_text("a" * 150 + "\n" + "b " * 100, 200)
    assert line_cut[0] == "a" * 150
    sentence_cut = split_text("Short one. " + "word " * 25 + "End here. " + "word " * 40, 200)
    assert sentence_cut[0].endswith("End here.")
    space_cut = split_text("word " * 100, 200)
    assert all(part.split(" ") == ["word"] * len(part.split(" ")) for part in space_cut)


def test_a_part_does_not_end_with_a_heading() -> None:
    text = "Intro words. " * 12 + "\n\n## Next section\n\n" + "More words here. " * 12
    parts = split_text(text, 250)
    assert parts[1].startswith("## Next section\n\nMore words")


def test_a_code_block_that_fits_is_kept_whole() -> None:
    block = "```python\n" + "\n".join(f"value_{i} = compute({i})" for i in range(30)) + "\n```"
    text = "Intro sentence. " * 90 + "\n\n" + block + "\n\nAfter the code."
    parts = split_text(text, 2000)
    assert block in parts[1]
    assert all(fence_lines(part)[1] is None for part in parts)


def test_a_huge_code_block_is_cut_at_lines_and_reopened() -> None:
    lines = [f"    result_{i} = transform(data[{i}], option=True)" for i in range(300)]
    parts = split_text("Here it is:\n\n```python\n" + "\n".join(lines) + "\n```\nDone.", 2000)
    assert len(parts) > 5
    assert parts[0] == "Here it is:"
    code_parts = parts[1:-1]
    assert all(p.startswith("```python\n") and p.endswith("\n```") and len(p) <= 2000 for p in code_parts)
    assert parts[-1].startswith("```python\n") and parts[-1].endswith("```\nDone.")
    body = [line for part in parts[1:] for line in part.split("\n")[1:]]
    assert [line for line in body if line.startswith("    result_")] == lines


def test_four_backtick_fences_close_with_four() -> None:
    text = "````md\n" + "```\ninner\n```\n" * 40 + "````"
    parts = split_text(text, 200)
    assert len(parts) > 1
    assert all(p.startswith("````md\n") and p.endswith("\n````") for p in parts)


def test_text_ending_inside_a_code_block_is_closed() -> None:
    assert split_text("Look:\n```js\nconst x = 1;", 2000) == ["Look:\n```js\nconst x = 1;\n```"]


def test_a_single_huge_word() -> None:
    word = "w" * 10_000
    parts = split_text(word, 2000)
    assert all(len(p) <= 2000 for p in parts)
    assert "".join(parts) == word


def test_crlf_paragraphs() -> None:
    paragraphs = [f"line one of {i}\r\nline two of {i} " * 4 for i in range(6)]
    text = "\r\n\r\n".join(p.rstrip() for p in paragraphs)
    parts = split_text(text, 250)
    assert len(parts) > 1
    for part in parts:
        assert not part.startswith(("\r", "\n")) and not part.endswith(("\r", "\n"))
    assert squash("".join(parts)) == squash(text)


SCOTLAND = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"


@pytest.mark.parametrize("cluster", ["👨‍👩‍👧", "🇫🇷", "👍🏽", "e\u0301", SCOTLAND])
def test_grapheme_clusters_are_not_split(cluster: str) -> None:
    parts = split_text(cluster * 800, 150)
    assert len(parts) > 1
    for part in parts:
        assert part.replace(cluster, "") == ""


def test_limit_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        split_text("hello", MIN_LIMIT - 1)


def test_a_backtick_run_never_starts_a_part() -> None:
    text = "x" * 195 + "```python and more words after it"
    for part in split_text(text, 200):
        assert fence_lines(part)[1] is None


@pytest.mark.parametrize("text", [
    "```` a" + "y" * 23 + " " * 60 + "a ",  # a fence-like start, spaces up to the window's end
    "y" * 29 + " " * 60 + "``` ",  # the next part would start with backticks
    "```py" + " " * 70 + "z\n```py" + " " * 70 + "\ncode\n```",  # the same start: text, then a fence
])
def test_lines_that_only_look_like_fences(text: str) -> None:
    parts = split_text(text, 100)
    assert all(fence_lines(part)[1] is None for part in parts)
    assert "".join(squash(part) for part in parts) == squash(text)


def test_splitting_100kb_is_fast() -> None:
    unit = "Some prose here. " * 20 + "\n\n```python\n" + "x = 1\n" * 40 + "```\n\n" + "z" * 300 + "\n"
    text = (unit * (100_000 // len(unit) + 1))[:100_000]
    best = min(_timed(lambda: split_text(text, 2000)) for _ in range(3))
    assert best < 0.05


def _timed(run: object) -> float:
    assert callable(run)
    started = time.perf_counter()
    run()
    return time.perf_counter() - started
