"""Splitting a long answer into chat messages of bounded length, the same way for every platform.

``split_text(text, limit)`` returns parts of at most ``limit`` characters (11 of them are kept
free for a closing fence, so prose parts are at most ``limit - 11`` long). Cut points are chosen,
in order of preference, at a blank line, a line end, a sentence end, a space, and only then
anywhere (never inside a grapheme such as an emoji with modifiers). A part is filled at least
half way before a weaker kind of cut is preferred over a stronger one, and never ends with a
Markdown heading.

Markdown code fences are kept valid in every part. A fenced block is never cut when it fits in
a part: if it does not fit in what is left of the current part, the part ends before it. A block
longer than a part is cut at line ends inside it; the part is closed with a fence line and the
next part reopens it with the same info string (`````python``). A text that ends inside an open
block gets a closing fence line on its last part. Fence lines follow CommonMark for backtick
fences, bounded for the sake of the budget: at most 3 spaces of indent, 3 to 10 backticks, no
backtick in the info string, and at most ``MAX_FENCE_LINE`` characters before trailing spaces.
Tilde fences are plain text (Slack and Discord do not render them).

Contracts (checked by property tests):

- every part has ``1 <= len(part) <= limit`` and ends outside any code block;
- removing the added fence lines and joining the parts gives back the text, except for the
  whitespace at cut points (blank lines there are dropped; a line's indentation is kept, cut to
  4 characters when longer than 40);
- prefix stability: every part of ``split_text(t, n)`` except the last is also a part of
  ``split_text(t + s, n)``, at the same index. A cut is decided from the fence state where the
  part starts and the next ``limit`` characters only (plus, when those are a fence-like line
  start followed by spaces, the next character that is not a space), and a part is cut only
  when the text goes on beyond them, so text appended later cannot move an earlier cut.

``split_parts`` is the same split with the source offsets and fence state of every part, and can
resume at a part boundary: ``ReplyWriter`` uses it to re-split only the part still growing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

MIN_LIMIT = 100
MAX_FENCE_TICKS = 10
MAX_FENCE_LINE = 40
# Room kept free in every part for "\n" + the longest closing fence, so a cut never has to move
# once the fence state at the cut is known.
_RESERVE = 1 + MAX_FENCE_TICKS

_FENCE_LINE = re.compile(r" {0,3}(`{3,10})([^`]*)")  # 10 is MAX_FENCE_TICKS
_MAYBE_FENCE_LINE = re.compile(r" {0,3}(?:`{0,2}|`{3,10}[^`]*)")  # a fence line, or its beginning
_NON_SPACE = re.compile(r"\S")
_LINE_END_OR_TEXT = re.compile(r"[\S\n]")
_HEADING = re.compile(r" {0,3}#{1,6}(?:\s|$)")
_SPACES = r"[^\S\n\xa0\u2007\u202f]"  # whitespace we may break at: not newlines, not no-break spaces
# A cut at a sentence end or a run of spaces, where the next part would not start with a backtick.
_BREAK_SPACE = re.compile(_SPACES + r"+(?=[^\s`])")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]»]*(?=" + _SPACES + r"+[^\s`])|[。！？](?=[^\s`])")
_ZWJ = "\u200d"


@dataclass(frozen=True, slots=True)
class Part:
    """One message of a split text.

    ``text`` is the message. ``end`` is the offset in the source text where this part's content
    ends (the next part starts after the whitespace that follows). ``fence`` is the opening fence
    line (e.g. "```python") of the code block still open at ``end``: reopened by the next part,
    or, for the last part, the block this part had to close.
    """

    text: str
    end: int
    fence: str | None


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into messages of at most ``limit`` (>= 100) characters; see the module doc."""
    return [part.text for part in split_parts(text, limit)]


def split_parts(text: str, limit: int, *, start: int = 0, fence: str | None = None) -> list[Part]:
    """Split ``text[start:]`` like ``split_text``, starting inside the code block ``fence`` if given.

    Resuming at a returned part's ``end`` and ``fence`` gives the same parts as the full split.
    Raises ``ValueError`` when ``limit`` is below ``MIN_LIMIT``.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT} characters, got {limit}")
    end = len(text.rstrip())
    parts: list[Part] = []
    pos, floor = _next_start(text, start, end)
    while pos < end:
        head = f"{fence}\n" if fence else ""
        budget = limit - len(head) - _RESERVE
        if end - pos <= budget:
            fence = _fence_after(text, pos, end, fence)
            parts.append(Part(head + text[pos:end] + _closing(fence), end, fence))
            break
        cut, fence = _choose_cut(text, pos, floor, pos + budget, fence)
        parts.append(Part(head + text[pos:cut].rstrip() + _closing(fence), cut, fence))
        pos, floor = _next_start(text, cut, end)
    return parts


def closing_fence(fence: str) -> str:
    """The line that closes a block opened by ``fence`` (an opening fence line)."""
    return "`" * (len(fence) - len(fence.lstrip("`")))


def _closing(fence: str | None) -> str:
    return "\n" + closing_fence(fence) if fence else ""


def _next_start(text: str, cut: int, end: int) -> tuple[int, int]:
    """Where the part after ``cut`` starts, and its first non-space character.

    The whitespace at the cut is dropped, but not the indentation (spaces and tabs) of the line
    the part starts on; an indentation longer than ``MAX_FENCE_LINE`` is cut to 4 characters
    (still indented for Markdown, and leaving room in the part).
    """
    match = _NON_SPACE.search(text, cut, end)
    floor = match.start() if match else end
    line_start = text.rfind("\n", cut, floor) + 1
    if line_start == 0 and cut > 0 and text[cut - 1] != "\n":
        return floor, floor  # a cut inside a line
    start = floor
    while start > max(line_start, cut) and text[start - 1] in " \t":
        if floor - start == MAX_FENCE_LINE:
            return floor - 4, floor
        start -= 1
    return start, floor


def _fence_state(line: str, fence: str | None) -> str | None:
    """The open fence after ``line`` (without its newline), given the open fence before it."""
    if "```" not in line or len(line.rstrip()) > MAX_FENCE_LINE:
        return fence
    match = _FENCE_LINE.fullmatch(line)
    if match is None:
        return fence
    ticks, info = match.group(1), match.group(2).strip()
    if fence is None:
        return f"{ticks}{info}"
    if not info and len(ticks) >= len(closing_fence(fence)):
        return None
    return fence


def _fence_after(text: str, pos: int, end: int, fence: str | None) -> str | None:
    """The open fence at ``end``, reading the lines of ``text[pos:end]`` as complete lines."""
    line_start = pos
    while line_start <= end:
        newline = text.find("\n", line_start, end)
        line_end = end if newline == -1 else newline
        fence = _fence_state(text[line_start:line_end], fence)
        line_start = line_end + 1
    return fence


@dataclass
class _Window:
    """Cut candidates in ``text[pos:stop + 1]``, the only text a cut may depend on.

    Offsets are cut positions: the part would be ``text[pos:cut]``. -1 means none.
    """

    start: int
    paragraph: int = -1  # a newline ending a blank line, outside code
    line: int = -1  # any newline outside code
    tail: tuple[int, int] | None = None  # a last, unfinished line of plain text: mid-line cuts
    code_lines: list[int] = field(default_factory=list)  # newlines inside the block open at pos
    code_tail: tuple[int, int] | None = None  # the unfinished last line of that block
    code_fence: str | None = None  # the fence of that block
    any_line: tuple[int, str | None] = (-1, None)  # the last newline at all, with the fence after it
    ambiguous: bool = False  # the window is one line that more text could make a fence line


def _scan(text: str, pos: int, stop: int, fence: str | None) -> _Window:
    """Classify the lines of the window. Only complete lines count as fence lines: the last,
    unfinished line gets no cut if more text could still make it a fence line."""
    window = _Window(start=pos, code_fence=fence)
    in_first_block = fence is not None
    heading = False
    line_start = pos
    while line_start <= stop:
        newline = text.find("\n", line_start, stop + 1)
        if newline == -1:
            _scan_tail(window, text[line_start:stop + 1], line_start, stop, fence, in_first_block)
            break
        after = _fence_state(text[line_start:newline], fence)
        if after is None:
            heading = _line_end(window, text[line_start:newline], newline, fence is None, heading)
            in_first_block = False
        elif fence is None:
            in_first_block = line_start == pos
            window.code_fence = after if in_first_block else window.code_fence
        elif in_first_block:
            window.code_lines.append(newline)
        window.any_line = (newline, after)
        fence = after
        line_start = newline + 1
    return window


def _line_end(window: _Window, line: str, newline: int, is_text: bool, after_heading: bool) -> bool:
    """Note the cut at the end of a line outside code, unless the part would end with a heading.
    Returns whether the text up to here ends with a heading (and blank lines)."""
    blank = is_text and not line.strip()
    heading = is_text and ((after_heading and blank) or _HEADING.match(line) is not None)
    if not heading:
        window.line = newline
        if blank:
            window.paragraph = newline
    return heading


def _scan_tail(window: _Window, visible: str, start: int, stop: int, fence: str | None, in_block: bool) -> None:
    if len(visible.rstrip()) <= MAX_FENCE_LINE and _MAYBE_FENCE_LINE.fullmatch(visible):
        window.ambiguous = start == window.start
        # A block's last line before a possible closing fence goes to the next part with it,
        # so that part does not start with an empty block.
        if in_block and len(window.code_lines) > 1 and window.code_lines[-1] == start - 1:
            window.code_lines.pop()
    elif fence is None:
        window.tail = (start, stop)
    elif in_block:
        window.code_tail = (start, stop)


def _choose_cut(text: str, pos: int, floor: int, stop: int, fence: str | None) -> tuple[int, str | None]:
    """The cut for the part starting at ``pos`` (content within ``stop``), and the fence open there."""
    window = _scan(text, pos, stop, fence)
    if window.ambiguous:
        return _cut_ambiguous_line(text, pos, stop, fence)
    if window.line > floor or window.tail is not None:
        return _cut_outside_code(text, window, floor, stop), None
    if window.code_lines and window.code_lines[-1] > floor:
        return window.code_lines[-1], window.code_fence
    if window.code_tail is not None:
        return _cut_code_line(text, window.code_tail, floor, stop, window.code_fence), window.code_fence
    if window.any_line[0] > floor:
        return window.any_line
    cut = _hard_cut(text, stop, floor)
    return (cut if cut > floor else stop), fence


def _cut_ambiguous_line(text: str, pos: int, stop: int, fence: str | None) -> tuple[int, str | None]:
    """The window is a fence-like start of a line and then only spaces: what follows decides.

    The part is cut only when the text goes on past the window, so the end of the line or the
    next character on it is there to read. A fence line is cut at its end; a longer line is cut
    after two backticks, so that neither piece reads as a fence line.
    """
    after = _LINE_END_OR_TEXT.search(text, stop + 1)
    if after is None:
        return stop, fence
    if after.group() == "\n":
        return after.start(), _fence_state(text[pos:after.start()], fence)
    return text.index("`", pos) + 2, fence


def _cut_outside_code(text: str, window: _Window, floor: int, stop: int) -> int:
    """The best cut outside code: the strongest kind past half the window, else the last soft
    cut (line end, sentence end, space), else a hard cut."""
    half = floor + (stop - floor) // 2
    if window.paragraph >= half:
        return window.paragraph
    if window.line >= half or window.tail is None:
        return window.line
    sentence, space, hard = _line_cuts(text, window.tail[0], floor, stop, None)
    for candidate in (sentence, space):
        if candidate >= half:
            return candidate
    best = max(window.line, sentence, space)
    if best > floor:
        return best
    return hard if hard > floor else stop


def _cut_code_line(text: str, span: tuple[int, int], floor: int, stop: int, fence: str | None) -> int:
    """A cut inside a code line longer than a part: at a space past half the window, else hard."""
    _, space, hard = _line_cuts(text, span[0], floor, stop, fence)
    if space >= floor + (stop - floor) // 2 or (space > floor and hard == -1):
        return space
    return hard if hard > floor else stop


def _line_cuts(text: str, line_start: int, floor: int, stop: int, fence: str | None) -> tuple[int, int, int]:
    """The last sentence-end, space and hard cuts (-1: none) in the unfinished line at ``line_start``.

    A cut must not turn a piece of the line into a fence line: the text after the cut never
    starts with a backtick, and the piece before it must not read as one.
    """
    lo = max(line_start, floor)

    def last_valid(cuts: list[int]) -> int:
        for cut in reversed(cuts):
            if _fence_state(text[line_start:cut].rstrip(), fence) == fence:
                return cut
        return -1

    sentences = [m.end() for m in _SENTENCE_END.finditer(text, lo + 1, stop + 1)]
    spaces = [m.start() for m in _BREAK_SPACE.finditer(text, lo + 1, stop + 1)]
    hard = _hard_cut(text, stop, lo)
    hard = last_valid([hard] if hard > lo else [])
    if hard == -1 and lo == floor and text[lo] == "`":
        # Only spaces follow a fence-like start up to the window's end: cutting its backticks
        # after two leaves "``" here and a line too long to be a fence line there.
        hard = lo + 2
    return last_valid(sentences), last_valid(spaces), hard


def _hard_cut(text: str, stop: int, floor: int) -> int:
    """Cut at ``stop``, moved back so that no grapheme cluster is split and the next part starts
    right at the cut, not with a backtick; -1 if that is not possible."""
    cut = stop
    while not _can_start_part(text[cut]) or _joins(text[cut - 1], text[cut]):
        cut -= 1
        if cut - 1 <= floor:
            return -1
    if _splits_flag(text, cut, floor):
        cut -= 1
    return cut if cut > floor and _can_start_part(text[cut]) else -1


def _can_start_part(char: str) -> bool:
    # After a hard cut the next part starts right there: not at a space (it would be dropped,
    # showing what follows), not at a backtick (it could start a fence line).
    return char != "`" and not char.isspace()


def _joins(before: str, after: str) -> bool:
    """Whether ``after`` belongs to the same grapheme cluster as ``before`` (approximately)."""
    if before == _ZWJ or after == _ZWJ:
        return True
    code = ord(after)
    if 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True  # variation selectors, skin tones, tag characters (subdivision flags)
    return unicodedata.category(after) in ("Mn", "Mc", "Me")


def _is_regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _splits_flag(text: str, cut: int, floor: int) -> bool:
    """Whether ``cut`` falls between the two regional indicators of a flag."""
    if cut - 1 <= floor or not (_is_regional(text[cut - 1]) and _is_regional(text[cut])):
        return False
    run = 0
    while cut - 1 - run >= 0 and _is_regional(text[cut - 1 - run]):
        run += 1
    return run % 2 == 1
