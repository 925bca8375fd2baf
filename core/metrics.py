"""Prometheus metrics (SPEC §6). One registry per process, exposed at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

MESSAGES_RECEIVED = Counter(
    "switchboard_messages_received", "User messages accepted at intake",
    ["platform", "outcome"], registry=REGISTRY,
)
REPLIES_POSTED = Counter(
    "switchboard_replies_posted", "Chat messages posted as (parts of) answers",
    ["platform"], registry=REGISTRY,
)
RUNS = Counter(
    "switchboard_runs", "Assistant runs by final status", ["backend", "status"], registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "switchboard_tool_calls", "Tool calls by outcome", ["tool", "outcome"], registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "switchboard_queue_depth", "Messages accepted and not yet answered, as this process sees them",
    registry=REGISTRY,
)
ACK_SECONDS = Histogram(
    "switchboard_ack_seconds", "Time from receiving a platform event to acknowledging it",
    ["platform"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
FIRST_TEXT_SECONDS = Histogram(
    "switchboard_time_to_first_text_seconds", "Time from intake to the first streamed text",
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
RUN_SECONDS = Histogram(
    "switchboard_run_duration_seconds", "Duration of assistant runs, tool rounds included",
    ["backend"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
TOOL_SECONDS = Histogram(
    "switchboard_tool_latency_seconds", "Latency of tool endpoint requests",
    ["tool"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
