"""Just enough of the Redis protocol (RESP2, and RESP3's extra types) to count exchanges.

``value_end`` finds where one complete value ends without building it; ``command_head`` reads
the first words of a client command (the name, and the SHA of an ``EVALSHA``).
"""

from __future__ import annotations

_CRLF = b"\r\n"
_LINE = frozenset(b"+-:_,#(")  # a value that is one line: simple string, error, integer, null, ...
_BULK = frozenset(b"$=!")  # a length line, then that many bytes and CRLF
_AGGREGATE = frozenset(b"*~>")  # a count line, then that many values
_MAP = frozenset(b"%|")  # a count line, then twice that many values


class RespError(ValueError):
    """The bytes are not RESP: the proxy cannot count this connection any more."""


def value_end(buf: bytes | bytearray, pos: int) -> int:
    """Offset just past the complete value that starts at ``pos``; -1 if ``buf`` holds only part of it."""
    pending = 1
    size = len(buf)
    while pending:
        eol = buf.find(_CRLF, pos)
        if eol < 0:
            return -1
        kind = buf[pos]
        pending -= 1
        if kind in _LINE:
            pos = eol + 2
        elif kind in _BULK:
            length = int(buf[pos + 1:eol])
            pos = eol + 2 if length < 0 else eol + 2 + length + 2
            if pos > size:
                return -1
        elif kind in _AGGREGATE or kind in _MAP:
            count = int(buf[pos + 1:eol])
            pending += max(0, count) * (2 if kind in _MAP else 1)
            pos = eol + 2
        else:
            raise RespError(f"unexpected RESP type byte {kind!r}")
    return pos


def command_head(buf: bytes | bytearray, pos: int, end: int, words: int = 2) -> list[str]:
    """The first ``words`` words of the complete command in ``buf[pos:end]`` (an array of bulk strings,
    or an inline command line)."""
    if buf[pos] != ord("*"):
        return bytes(buf[pos:end]).decode(errors="replace").split()[:words]
    eol = buf.find(_CRLF, pos)
    count = int(buf[pos + 1:eol])
    out: list[str] = []
    pos = eol + 2
    for _ in range(min(count, words)):
        eol = buf.find(_CRLF, pos)
        length = int(buf[pos + 1:eol])
        out.append(bytes(buf[eol + 2:eol + 2 + length]).decode(errors="replace"))
        pos = eol + 2 + length + 2
    return out
