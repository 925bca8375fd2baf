"""The emulator's scripted "model": pure, deterministic rules from a user's text to an answer.

Rules, in order (the text is the latest user message of the thread, directives removed):

- ``call <function> <args>`` with ``<function>`` among the run's function tools: one call to it,
  with ``<args>`` passed through raw (even invalid JSON; empty means ``{}``).
- the word "weather" and a ``get_weather`` function tool: one ``get_weather({"location": city})``
  call per city named after `` in `` ("in Paris and London" -> two parallel calls; default Paris).
- otherwise: ``[emulator] You said: <text> (message N in this thread)``, N counting user messages.

After tool outputs arrive the answer is ``[emulator] The tool said: <output>``, one line per output.

Directives may appear anywhere in the text: ``!slow=<s>``, ``!fail``, ``!expire``,
``!incomplete``, ``!cancel``, ``!long=<n>``, ``!http=<status>``, ``!drop`` (see ``Directives``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

_DIRECTIVE = re.compile(r"!(slow|fail|expire|incomplete|cancel|long|http|drop)(?:=(\S*))?")
_CALL = re.compile(r"\bcall\s+([A-Za-z0-9_-]+)\s*(.*)\Z", re.DOTALL)
_CITY_SPLIT = re.compile(r"\s*(?:,|&|\band\b)\s*")
_PUNCTUATION = "?!.,;:\"'()[]{}"
WEATHER_FUNCTION = "get_weather"
DEFAULT_CITY = "Paris"


@dataclass(frozen=True)
class Directives:
    """Test controls embedded in a user message.

    ``slow_s``: spread this many seconds of sleep over the streamed chunks. ``fail``/``expire``:
    the run ends failed/expired before any output. ``incomplete``/``cancel``: the answer stops
    halfway and the run ends incomplete/cancelled. ``long_chars``: the answer is that many chars of
    paragraphs with a code block. ``http_status``: the request carrying the text answers that
    status. ``drop``: the SSE connection is cut halfway through the answer (the run itself goes on).
    """

    slow_s: float = 0.0
    fail: bool = False
    expire: bool = False
    incomplete: bool = False
    cancel: bool = False
    long_chars: int | None = None
    http_status: int | None = None
    drop: bool = False


@dataclass(frozen=True)
class PlannedCall:
    """A function call the scripted model makes; ``arguments`` is the raw JSON text."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    """What the model answers to a user text: function calls, or else text."""

    text: str = ""
    calls: tuple[PlannedCall, ...] = ()


def parse_directives(text: str) -> Directives:
    """Read every directive in ``text``; malformed values are ignored."""
    found: dict[str, Any] = {}
    for name, value in _DIRECTIVE.findall(text):
        if name == "slow":
            found["slow_s"] = max(0.0, _to_float(value) or 0.0)
        elif name == "long":
            found["long_chars"] = _to_int(value)
        elif name == "http":
            status = _to_int(value)
            found["http_status"] = status if status is not None and 400 <= status <= 599 else None
        else:
            found[name] = True
    return replace(Directives(), **found)


def _to_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _to_int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def strip_directives(text: str) -> str:
    """The text without its directives, whitespace collapsed."""
    return " ".join(_DIRECTIVE.sub(" ", text).split())


def reply_to(text: str, *, user_messages: int, functions: Collection[str]) -> Reply:
    """The scripted answer to the latest user ``text`` given the run's function tool names."""
    clean = strip_directives(text)
    call = _CALL.search(clean)
    if call and call.group(1) in functions:
        return Reply(calls=(PlannedCall(call.group(1), call.group(2).strip() or "{}"),))
    if "weather" in clean.lower() and WEATHER_FUNCTION in functions:
        calls = tuple(
            PlannedCall(WEATHER_FUNCTION, json.dumps({"location": city})) for city in weather_cities(clean)
        )
        return Reply(calls=calls)
    directives = parse_directives(text)
    if directives.long_chars is not None:
        return Reply(text=long_answer(directives.long_chars))
    return Reply(text=f"[emulator] You said: {clean} (message {user_messages} in this thread)")


def weather_cities(text: str) -> list[str]:
    """The city names after the first `` in `` of ``text``; ``[DEFAULT_CITY]`` if none."""
    _, sep, rest = text.partition(" in ")
    if not sep:
        return [DEFAULT_CITY]
    cities = [part.strip(_PUNCTUATION + " ") for part in _CITY_SPLIT.split(rest)]
    return [city for city in cities if city] or [DEFAULT_CITY]


def reply_to_outputs(outputs: Sequence[str]) -> str:
    """The answer once tool outputs arrived: one line per output, in submission order."""
    return "\n".join(f"[emulator] The tool said: {output}" for output in outputs)


def split_chunks(text: str, count: int) -> list[str]:
    """``text`` cut into at most ``count`` non-empty pieces of near-equal size, in order."""
    count = max(1, min(count, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return [piece for piece in pieces if piece]


_SENTENCE = "The emulator writes this sentence to make a long answer longer. "
_SENTENCES_PER_PARAGRAPH = 6
_CODE_BLOCK = (
    "```python\n"
    "def emulated_answer(words: list[str]) -> str:\n"
    '    """An example block: long answers must not be split inside it."""\n'
    "    total = 0\n"
    "    for word in words:\n"
    "        total += len(word)\n"
    '    return f"{len(words)} words, {total} letters"\n'
    "```"
)
_PREFIX = "[emulator] "


def long_answer(chars: int) -> str:
    """Exactly ``chars`` characters (or the shortest possible answer, if more) of paragraphs
    with a ```python code block in the middle."""
    minimum = len(_PREFIX) + len(_CODE_BLOCK) + 6
    budget = max(chars, minimum) - len(_CODE_BLOCK) - 4
    head = _paragraphs(_PREFIX, budget // 2)
    tail = _paragraphs("", budget - len(head))
    return f"{head}\n\n{_CODE_BLOCK}\n\n{tail}"


def _paragraphs(prefix: str, size: int) -> str:
    paragraph = _SENTENCE * _SENTENCES_PER_PARAGRAPH
    text = prefix + "\n\n".join([paragraph.strip()] * (size // len(paragraph) + 2))
    text = text[:size]
    stripped = text.rstrip()
    return stripped + "." * (len(text) - len(stripped))


def count_tokens(text: str) -> int:
    """A rough token count (about four characters a token), for usage objects."""
    return (len(text) + 3) // 4
