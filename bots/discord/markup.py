"""Markdown to Discord's Markdown.

Discord renders most Markdown itself (emphasis, lists, quotes, links, code fences, ``#``–``###``
headings). What it does not render is rewritten to something it does: deeper headings become bold
lines. Code blocks are left untouched. The result is never longer than the input, so core's split
at Discord's 2000 characters still holds.
"""

from __future__ import annotations

import re

_DEEP_HEADING = re.compile(r"^ {0,3}#{4,6}[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}```")


def to_discord(markdown: str) -> str:
    lines = markdown.split("\n")
    in_code = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            heading = _DEEP_HEADING.match(line)
            if heading is not None:
                lines[index] = f"**{heading.group(1)}**"
    return "\n".join(lines)
