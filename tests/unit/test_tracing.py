"""W3C traceparent helpers: parsing by the spec's rules, children keep the trace."""

from __future__ import annotations

import pytest

from core.tracing import TraceParent, child_traceparent, new_traceparent, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_parse_valid() -> None:
    parsed = parse_traceparent(VALID)
    assert parsed == TraceParent(trace_id=TRACE, span_id=SPAN, flags="01")
    assert parsed.sampled
    assert parsed.header() == VALID


def test_parse_trims_surrounding_whitespace() -> None:
    assert parse_traceparent(f"  {VALID} ") is not None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        VALID.upper(),                                  # hex must be lowercase
        f"ff-{TRACE}-{SPAN}-01",                        # version ff is forbidden
        f"00-{'0' * 32}-{SPAN}-01",                     # all-zero trace-id
        f"00-{TRACE}-{'0' * 16}-01",                    # all-zero parent-id
        f"00-{TRACE}-{SPAN}-01-extra",                  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{SPAN}-01",                   # short trace-id
        f"00-{TRACE}-{SPAN}-1",                         # short flags
        f"00_{TRACE}_{SPAN}_01",
        f"01-{TRACE}-{SPAN}-01extra",                   # a future version still separates fields with "-"
    ],
)
def test_parse_rejects_invalid(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_future_version_keeps_ids_and_only_the_sampled_flag() -> None:
    parsed = parse_traceparent(f"cc-{TRACE}-{SPAN}-03-what-the-future-holds")
    assert parsed == TraceParent(trace_id=TRACE, span_id=SPAN, flags="01")
    assert parsed.header() == f"00-{TRACE}-{SPAN}-01"


def test_child_keeps_trace_and_flags_with_a_new_span() -> None:
    unsampled = f"00-{TRACE}-{SPAN}-00"
    children = {child_traceparent(unsampled) for _ in range(20)}
    assert {c.trace_id for c in children} == {TRACE}
    assert {c.flags for c in children} == {"00"}
    spans = {c.span_id for c in children}
    assert SPAN not in spans
    assert len(spans) == 20
    for child in children:
        assert parse_traceparent(child.header()) == child


@pytest.mark.parametrize("value", [None, "not-a-traceparent"])
def test_child_of_nothing_starts_a_new_sampled_trace(value: str | None) -> None:
    child = child_traceparent(value)
    assert parse_traceparent(child.header()) == child
    assert child.sampled
    assert child_traceparent(value).trace_id != child.trace_id


def test_new_traceparent_sampling_flag() -> None:
    assert new_traceparent(sampled=False).flags == "00"
    assert new_traceparent().flags == "01"
