"""The fault-injection suite (issue 7): real ``switchboard run`` processes, real Redis, the Slack and
Assistants emulators — and faults throughout: ``kill -9`` of gateways at random points of runs,
SIGTERM (graceful hand-back), Redis crashes and restarts (AOF), backend 429/500 bursts, slow and
hanging tools, duplicate event deliveries.

For every user message: exactly one final answer in its Slack thread (or one clear error), in
order within its conversation, and never a backend 400 for a message on an active run. The
table the issue's closing note quotes is printed and written to ``tests/faults/results/``.

    pytest tests/faults             # CI size: 400 messages
    pytest tests/faults --soak      # 6000 messages
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bots.slack.sink import SlackReplySink
from core.emulator.assistants import AssistantsEmulator
from core.keys import WORK_GROUP, Keys
from core.ports import FindsPostedParts
from tests.conftest import RedisServer
from tests.faults.fleet import Fleet, RecordingSlack, ToolServer, fleet_config, fleet_env
from tests.faults.scenario import (
    SOAK,
    Conversation,
    Faults,
    Plan,
    Sender,
    Unanswered,
    Verdict,
    answered_in_order,
    inject_faults,
    judge,
    latencies,
    plan_conversations,
    recovery_times,
)

RESULTS = Path(__file__).resolve().parent / "results"
SLACK_TEAM = "T0TEAM"


@pytest.fixture
async def slack() -> AsyncIterator[RecordingSlack]:
    emulator = RecordingSlack()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def tools() -> AsyncIterator[ToolServer]:
    server = ToolServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_every_message_is_answered_exactly_once_through_faults(
    redis_server: RedisServer, redis_client: object, slack: RecordingSlack, tools: ToolServer,
    tmp_path: Path, soak: bool, capsys: pytest.CaptureFixture[str],
) -> None:
    plan = SOAK if soak else Plan()
    seed = random.randrange(1 << 30)
    random.seed(seed)
    logs = tmp_path / "logs"  # copied next to the results when the run fails, for the post-mortem
    logs.mkdir()
    config = tmp_path / "switchboard.yaml"
    config.write_text(fleet_config(tools_base=tools.base_url, lease_ttl_s=plan.lease_ttl_s, grace_s=plan.grace_s))
    conversations = plan_conversations(plan)
    faults = Faults()
    started = time.monotonic()
    async with AssistantsEmulator(chunks=6, latency_s=0.02) as emulator:
        env = fleet_env(config_path=config, redis_url=redis_server.url, backend_url=emulator.base_url, slack=slack)
        fleet = Fleet(size=plan.gateways, env=env, workdir=logs, slack=slack)
        await fleet.start()
        try:
            await _run_load(fleet, slack, emulator, redis_server, plan, conversations, faults)
        except Unanswered as exc:
            async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as redis:
                states = [await _redis_state(redis, c) for c in exc.conversations]
            (logs / "faults.json").write_text(json.dumps(faults.timeline))
            kept = _keep_logs(logs, soak=soak)
            raise AssertionError(f"seed {seed}, logs in {kept}\n{exc}\n" + "\n".join(states)) from exc
        finally:
            await fleet.stop()
            (logs / "faults.json").write_text(json.dumps(faults.timeline))
        verdict = Verdict()
        for conversation in conversations:
            judge(slack, conversation, verdict)
        result = _table(plan, seed, conversations, faults, verdict, emulator, fleet, tools,
                        duration_s=time.monotonic() - started)
    _report(result, capsys, soak=soak)
    outcome = result["outcome"]
    # Other 400s are expected (e.g. cancelling a run that just ended); on an active run none may happen.
    tolerated = ("answered", "clear_errors", "orphan_partials", "backend_400s")
    problems = {k: v for k, v in outcome.items() if k not in tolerated and v}
    if problems:
        pytest.fail(f"seed {seed}: {problems}\n{json.dumps(result, indent=1)}\nlogs: {_keep_logs(logs, soak=soak)}")
    assert outcome["answered"] + outcome["clear_errors"] == plan.messages
    # Known gap: without FindsPostedParts a kill -9 between a chat post and its record leaves the
    # unfinished start of that answer behind (one per answer in that window on the killed
    # process: a few per kill at most); with it, none may remain.
    orphans_allowed = 0 if issubclass(SlackReplySink, FindsPostedParts) else 3 * faults.counts["kill9"]
    assert outcome["orphan_partials"] <= orphans_allowed, result
    assert all(code == 0 for _, code in fleet.exit_codes if not _.startswith("kill")), fleet.exit_codes


def _keep_logs(logs: Path, *, soak: bool) -> Path:
    """Copy a failed run's gateway logs (and fault timeline) under ``results/`` (git-ignored)."""
    kept = RESULTS / f"logs-{'soak' if soak else 'ci'}-{int(time.time())}"
    shutil.copytree(logs, kept)
    return kept


async def _run_load(fleet: Fleet, slack: RecordingSlack, emulator: AssistantsEmulator, redis: RedisServer,
                    plan: Plan, conversations: list[Conversation], faults: Faults) -> None:
    sender = Sender(fleet, slack, plan, faults)
    await sender.warm_up()
    stop = asyncio.Event()
    talking = [len(conversations)]

    async def converse(conversation: Conversation, index: int) -> None:
        try:
            await _stagger(sender, conversation, index)
        finally:
            talking[0] -= 1

    injector = asyncio.create_task(inject_faults(fleet=fleet, redis=redis, emulator=emulator, plan=plan,
                                                 faults=faults, stop=stop, talking=lambda: talking[0]))
    try:
        await asyncio.gather(*(converse(c, i) for i, c in enumerate(conversations)))
        await sender.duplicates_done()
    finally:
        stop.set()
        await injector
    await _until_all_answered(slack, conversations, timeout_s=180)
    # Late duplicates would come from a process that recovered something twice: give them time to show.
    await asyncio.sleep(plan.lease_ttl_s * 2)


async def _stagger(sender: Sender, conversation: Conversation, index: int) -> None:
    await asyncio.sleep(index * 0.05)
    await sender.converse(conversation)


async def _until_all_answered(slack: RecordingSlack, conversations: list[Conversation], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [c for c in conversations if answered_in_order(slack, c) < len(c.messages)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise Unanswered(missing, slack)
        await asyncio.sleep(0.25)


async def _redis_state(redis: aioredis.Redis, conversation: Conversation) -> str:
    """What Redis holds for a conversation (inbox, lease, the records of its waiting messages)."""
    keys = Keys()
    key = f"slack:{SLACK_TEAM}:{conversation.channel}:{conversation.thread_ts}"
    inbox = await redis.lrange(keys.inbox(key), 0, -1)
    lease = await redis.get(keys.lease(key)), await redis.pttl(keys.lease(key))
    records = [await redis.hgetall(keys.msg(key, str(message_id))) for message_id in inbox]
    pending = await redis.xpending(keys.work(0), WORK_GROUP)
    signals = [eid for eid, fields in await redis.xrange(keys.work(0)) if fields.get("conv") == key]
    owners = {p["message_id"]: (p["consumer"], p["time_since_delivered"])
              for p in await redis.xpending_range(keys.work(0), WORK_GROUP, min="-", max="+", count=100_000)
              if p["message_id"] in signals}
    return (f"{key}: lease={lease} inbox={inbox}\n"
            + "\n".join(f"  {r}" for r in records) + f"\n  work pending: {pending}"
            + f"\n  its signals in the stream: {signals}; pending (consumer, idle ms): {owners}")


def _table(plan: Plan, seed: int, conversations: list[Conversation], faults: Faults, verdict: Verdict,
           emulator: AssistantsEmulator, fleet: Fleet, tools: ToolServer, *, duration_s: float) -> dict[str, Any]:
    kinds = _kinds(s.kind for c in conversations for s in c.messages)
    counts = faults.counts
    return {
        "seed": seed, "duration_s": round(duration_s, 1),
        "messages": plan.messages, "conversations": plan.conversations, "gateways": plan.gateways,
        "lease_ttl_s": plan.lease_ttl_s,
        "faults": {
            "kill -9 of a gateway": counts["kill9"],
            "SIGTERM of a gateway (drain + hand back)": counts["sigterm"],
            "Redis crash + restart (AOF)": counts["redis_restart"],
            "backend 429 bursts (requests refused)": f"{counts['backend_429']} ({counts['backend_429_requests']})",
            "backend 500 bursts (requests refused)": f"{counts['backend_500']} ({counts['backend_500_requests']})",
            "duplicate event deliveries": counts["duplicate_delivery"],
            "redeliveries after a refused/failed delivery": counts["redelivered_after_refusal"],
            "slow runs (!slow 1-3 s)": kinds["slow"],
            "slow tool calls (1.5 s)": kinds["slow_tool"],
            "hanging tool calls (timed out)": kinds["hang_tool"],
        },
        "outcome": {
            "answered": verdict.answered, "clear_errors": verdict.clear_errors, "lost": verdict.lost,
            "duplicated": verdict.duplicated, "stray_messages": verdict.stray, "out_of_order": verdict.out_of_order,
            "open_streams": verdict.open_streams, "orphan_partials": verdict.orphan_partials,
            "active_run_conflicts": emulator.state.active_run_conflicts,
            "backend_400s": sum(1 for r in emulator.state.requests if r.status == 400),
        },
        "backend_400_requests": dict(Counter(_route(r.method, r.path) for r in emulator.state.requests
                                             if r.status == 400)),
        "problems": verdict.details[:50],
        "recovery_s": recovery_times(conversations, faults),
        "answer_latency_s": latencies(conversations),
        "tool_calls": dict(tools.calls),
        "gateway_processes_started": len(fleet.gateways),
    }


def _route(method: str, path: str) -> str:
    """``POST /v1/threads/thread_x/runs/run_y/cancel`` -> ``POST /v1/threads/*/runs/*/cancel``."""
    return method + " " + "/".join("*" if "_" in part else part for part in path.split("/"))


def _kinds(items: Any) -> dict[str, int]:
    counted: dict[str, int] = {}
    for item in items:
        counted[item] = counted.get(item, 0) + 1
    return {"slow": 0, "slow_tool": 0, "hang_tool": 0, **counted}


def _report(result: dict[str, Any], capsys: pytest.CaptureFixture[str], *, soak: bool) -> None:
    RESULTS.mkdir(exist_ok=True)
    name = "soak" if soak else "ci"
    (RESULTS / f"faults-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    outcome, recovery = result["outcome"], result["recovery_s"]
    rows = [("messages", f"{result['messages']} in {result['conversations']} conversations, "
                         f"{result['gateways']} gateways, {result['duration_s']} s")]
    rows += [(k, str(v)) for k, v in result["faults"].items()]
    rows += [("answered exactly once", str(outcome["answered"])), ("clear errors", str(outcome["clear_errors"])),
             ("lost", str(outcome["lost"])), ("duplicated", str(outcome["duplicated"])),
             ("stray / out of order", f"{outcome['stray_messages']} / {outcome['out_of_order']}"),
             ("orphan partial starts (kill -9 between post and record)", str(outcome["orphan_partials"])),
             ("backend 400 on an active run", str(outcome["active_run_conflicts"])),
             ("max recovery time", f"{max(recovery.values(), default=0.0)} s  {recovery}"),
             ("answer latency", str(result["answer_latency_s"]))]
    width = max(len(k) for k, _ in rows)
    with capsys.disabled():
        print(f"\n\nfault suite ({name}, seed {result['seed']})")
        for key, value in rows:
            print(f"  {key:<{width}}  {value}")
