"""W3C Trace Context ``traceparent`` helpers (https://www.w3.org/TR/trace-context/).

A chat event carries the ``traceparent`` it arrived with (or one made at intake); every outgoing
request it causes (a tool call) gets a *child*: the same trace-id, a fresh parent-id (span id),
the same flags. So one trace follows a message from chat to tool and back (SPEC §9).
"""

from __future__ import annotations

import re
import secrets
from typing import NamedTuple

_VERSION_00 = "00"
_FIELDS = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class TraceParent(NamedTuple):
    """A parsed ``traceparent``: lowercase hex fields, never all-zero ids."""

    trace_id: str
    span_id: str
    flags: str

    def header(self) -> str:
        """The header value, always written as version 00."""
        return f"{_VERSION_00}-{self.trace_id}-{self.span_id}-{self.flags}"

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 0x01)


def parse_traceparent(value: str | None) -> TraceParent | None:
    """Parse a ``traceparent`` header value; ``None`` when absent or invalid per the W3C rules.

    Version ``ff`` is invalid; version ``00`` must have exactly four fields; a higher version may
    carry more fields after the fourth, which are ignored, and only its "sampled" flag is kept
    (the spec's forward-compatibility rules).
    """
    if value is None:
        return None
    match = _FIELDS.match(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == _VERSION_00 and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version != _VERSION_00:
        # Flags of an unknown version mean nothing to us beyond "sampled".
        flags = f"{int(flags, 16) & 0x01:02x}"
    return TraceParent(trace_id=trace_id, span_id=span_id, flags=flags)


def _new_span_id() -> str:
    while True:
        span = secrets.token_hex(8)
        if span != _ZERO_SPAN:
            return span


def new_traceparent(*, sampled: bool = True) -> TraceParent:
    """The start of a new trace: a random trace-id and span id."""
    trace_id = secrets.token_hex(16)
    while trace_id == _ZERO_TRACE:
        trace_id = secrets.token_hex(16)
    return TraceParent(trace_id=trace_id, span_id=_new_span_id(), flags="01" if sampled else "00")


def child_traceparent(value: str | None) -> TraceParent:
    """A child span of ``value``: same trace-id and flags, a new span id.

    An absent or invalid ``value`` starts a new trace, as the W3C spec tells a participant that
    cannot parse the incoming header to do.
    """
    parent = parse_traceparent(value)
    if parent is None:
        return new_traceparent()
    return TraceParent(trace_id=parent.trace_id, span_id=_new_span_id(), flags=parent.flags)
