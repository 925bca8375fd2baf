"""Recovery, step by step: several "processes" (core runtimes) on one real Redis and one Assistants
emulator, crashed between steps on purpose. A crash is a worker cancelled without handing its
conversations back (as after ``kill -9``); the run on the emulator goes on meanwhile, as on a
real server. Every answer lands in one shared recording sink, so a second post is visible."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from core.demo_tool import DemoToolServer
from core.emulator.assistants import AssistantsEmulator
from core.engine import MAX_ATTEMPTS
from core.errors import LeaseLost, StoreUnavailable
from core.httpserver import HttpServer, redis_check
from core.keys import WORK_GROUP
from core.models import InboundMessage, Place
from core.ports import Turn
from core.recovery import FencedSink, RetryPolicy
from core.runtime import Runtime, open_runtime
from core.settings import Settings
from core.worker import _Driver
from tests.conftest import RedisServer, free_port
from tests.integration.harness import (
    RecordingSink,
    RecordingSinks,
    Reply,
    ToolEndpoints,
    begin,
    serve,
    stack_config,
    working,
)

LEASE_TTL_S = 2.0
FAST_RETRY = RetryPolicy(deadline_s=5.0, first_delay_s=0.05, max_delay_s=0.2)


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class BlockingTool:
    """A tool endpoint whose first call hangs until ``release`` is set; later calls answer at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (webhook-id header, call_id in the body)
        self.release = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/block", self._handle)
        self._runner, base_url = await serve(app)
        self.url = f"{base_url}/block"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append((request.headers.get("webhook-id", ""), body["call_id"]))
        if len(self.calls) == 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
        return web.json_response({"output": f"blocked-tool-{len(self.calls)}"})


@dataclass
class Proc:
    runtime: Runtime
    task: asyncio.Task[None]

    async def crash(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Stop like ``kill -9``: nothing handed back, the lease left to expire."""
        async def keep(driver: Any) -> None:
            return None

        monkeypatch.setattr(self.runtime.worker, "_hand_back", keep)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@dataclass
class Cluster:
    redis_url: str
    emulator: AssistantsEmulator
    sinks: RecordingSinks
    weather_url: str
    tools: ToolEndpoints
    blocking: BlockingTool

    def config_extra(self, gateway: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "gateway": {"lease_ttl_s": LEASE_TTL_S, "run_timeout_s": 20, **(gateway or {})},
            "backends": {"default": {"kind": "assistants", "max_retries": 0}},
            "tools": {"block_tool": {"url": self.blocking.url, "timeout_s": 20,
                                     "parameters": {"type": "object", "properties": {}}}},
            "profiles": {"helper": {"model": "emulator-1", "instructions": "Be helpful.",
                                    "tools": ["get_weather", "block_tool"]}},
        }

    @contextlib.asynccontextmanager
    async def process(self, *, gateway: dict[str, Any] | None = None) -> AsyncIterator[Proc]:
        settings = Settings(OPENAI_BASE_URL=self.emulator.base_url, OPENAI_API_KEY=SecretStr("k"),
                            REDIS_URL=self.redis_url)
        config = stack_config(weather_url=self.weather_url, tools_base=self.tools.base_url,
                              extra=self.config_extra(gateway))
        async with open_runtime(settings, config, redis_url=self.redis_url) as runtime:
            runtime.gateway.register_platform("console", self.sinks)
            runtime.engine.retry = FAST_RETRY
            async with working(runtime) as task:
                yield Proc(runtime, task)

    async def send(self, proc: Proc, text: str, conversation: str = "console:t:c1") -> InboundMessage:
        message = InboundMessage(event_id=f"E-{time.monotonic_ns()}", conversation=conversation, text=text,
                                 place=Place(platform="console", workspace="t", channel="c", user="u"))
        await proc.runtime.gateway.accept(message)
        return message

    def reply(self, message: InboundMessage) -> Reply:
        return self.sinks.reply(message.id)

    async def answered(self, message: InboundMessage, timeout_s: float = 15.0) -> Reply:
        reply = self.reply(message)
        await asyncio.wait_for(reply.done.wait(), timeout_s)
        return reply

    def runs_on(self, conversation_thread: str) -> list[str]:
        return self.emulator.state.threads[conversation_thread].run_ids


@pytest.fixture
async def cluster(redis_server: RedisServer, redis_client: object) -> AsyncIterator[Cluster]:
    tools, blocking = ToolEndpoints(), BlockingTool()
    await tools.start()
    await blocking.start()
    try:
        async with AssistantsEmulator(chunks=8) as emulator, DemoToolServer(secret="whsec_" + "x" * 32) as weather:
            yield Cluster(redis_server.url, emulator, RecordingSinks(), weather.url, tools, blocking)
    finally:
        await blocking.stop()
        await tools.stop()


async def record_of(proc: Proc, message: InboundMessage) -> dict[str, str]:
    store = proc.runtime.store
    return dict(await store.redis.hgetall(store.keys.msg(message.conversation, message.id)))


def only_thread(cluster: Cluster) -> str:
    (thread_id,) = cluster.emulator.state.threads
    return thread_id


# --- crashes ------------------------------------------------------------------------------------


async def test_crash_mid_stream_resumes_into_the_same_chat_message(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with cluster.process() as first:
        message = await cluster.send(first, "tell me slowly !slow=2")
        await until(lambda: cluster.reply(message).posts == 1, what="the first part")
        crashed_at = time.monotonic()
        await first.crash(monkeypatch)
    async with cluster.process() as second:
        reply = await cluster.answered(message)
        recovered_s = time.monotonic() - crashed_at
        assert reply.text == "[emulator] You said: tell me slowly (message 1 in this thread)"
        assert reply.posts == 1 and reply.done_calls == 1
        assert len(cluster.runs_on(only_thread(cluster))) == 1
        assert cluster.emulator.state.active_run_conflicts == 0
        assert (await record_of(second, message))["status"] == "answered"
        assert recovered_s < LEASE_TTL_S + 2.5, recovered_s


async def test_run_started_but_never_recorded_is_found_not_started_again(cluster: Cluster) -> None:
    async with cluster.process() as proc:
        await proc.runtime.worker.drain(0)  # intake only: this process answers nothing
        await proc.task
        message = await cluster.send(proc, "are you there?", conversation="console:t:found")
        store, backend = proc.runtime.store, proc.runtime.backends.backends["default"]
        # What a process that died right after its run request reached the backend leaves behind:
        await begin(store, message.conversation, "dead")  # lease taken, attempt 1 recorded as starting
        thread_id = await backend.new_thread()  # type: ignore[attr-defined]
        await store.record_thread(message, "dead", "default", thread_id)
        profile = proc.runtime.config.profiles["helper"]
        events = backend.run(turn=Turn(profile_name="helper", profile=profile, thread_id=thread_id,
                                       text=message.text, message_id=message.id))
        await anext(events)  # RunStarted: the run exists, its ID was never recorded
        await events.aclose()  # type: ignore[attr-defined]
        await store.redis.delete(store.keys.lease(message.conversation))  # the lease expired
    async with cluster.process():
        reply = await cluster.answered(message)
    assert reply.text == "[emulator] You said: are you there? (message 1 in this thread)"
    assert len(cluster.runs_on(thread_id)) == 1
    assert len(cluster.emulator.state.threads[thread_id].user_messages()) == 1


async def test_crash_while_a_tool_runs_reruns_it_with_the_same_call_id(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with cluster.process() as first:
        message = await cluster.send(first, "call block_tool {}")
        await until(lambda: len(cluster.blocking.calls) == 1, what="the tool call")
        await first.crash(monkeypatch)
    async with cluster.process():
        reply = await cluster.answered(message)
    assert reply.text == "[emulator] The tool said: blocked-tool-2"
    (first_call, second_call) = cluster.blocking.calls
    assert first_call == second_call and first_call[0].startswith("call_")  # endpoints can dedupe on it
    assert len(cluster.runs_on(only_thread(cluster))) == 1
    assert reply.posts == 1


async def test_crash_after_the_answer_was_written_but_not_recorded(cluster: Cluster) -> None:
    async with cluster.process() as proc:
        await proc.runtime.worker.drain(0)
        await proc.task
        message = await cluster.send(proc, "answer me once", conversation="console:t:late")
        store = proc.runtime.store
        pending = await begin(store, message.conversation, "dead")
        assert await proc.runtime.engine.answer(pending, "dead") == "answered"  # …then died before complete()
        await store.redis.delete(store.keys.lease(message.conversation))
    reply = cluster.reply(message)
    reply.done.clear()
    async with cluster.process() as second:
        await cluster.answered(message)
        assert (await record_of(second, message))["status"] == "answered"
    assert reply.text == "[emulator] You said: answer me once (message 1 in this thread)"
    assert reply.posts == 1 and reply.done_calls == 2
    assert len(cluster.runs_on(only_thread(cluster))) == 1


class FindingSinks(RecordingSinks):
    """Recording sinks that can find the parts an answer already has (``FindsPostedParts``)."""

    async def open(self, *, message: InboundMessage, existing_refs: Mapping[str, str]) -> RecordingSink:
        sink = await super().open(message=message, existing_refs=existing_refs)
        reply = self.reply(message.id)

        async def posted_parts() -> dict[int, str]:
            return {int(ref.rsplit("-", 1)[1]): ref for ref in reply.parts}

        sink.posted_parts = posted_parts  # type: ignore[attr-defined]
        return sink


async def test_a_part_posted_but_never_recorded_is_adopted_not_posted_again(cluster: Cluster) -> None:
    cluster.sinks = FindingSinks()
    async with cluster.process() as proc:
        await proc.runtime.worker.drain(0)
        await proc.task
        message = await cluster.send(proc, "say it once", conversation="console:t:orphan")
        store = proc.runtime.store
        # A process killed right after the chat platform took its post, before the record:
        await begin(store, message.conversation, "dead")  # lease taken, attempt 1 recorded as starting
        sink = await cluster.sinks.open(message=message, existing_refs={})
        orphan = await sink.post("[emulator] You", part=0)
        await store.redis.delete(store.keys.lease(message.conversation))
    async with cluster.process() as second:
        reply = await cluster.answered(message)
        assert json.loads((await record_of(second, message))["refs"]) == {"0": orphan}
    assert reply.posts == 1 and reply.parts == {orphan: "[emulator] You said: say it once (message 1 in this thread)"}


async def test_several_crashes_in_a_row_still_answer_once_in_order(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with cluster.process() as first:
        messages = [await cluster.send(first, f"m{i} !slow=1") for i in range(3)]
        await until(lambda: cluster.reply(messages[0]).posts == 1, what="the first answer")
        await first.crash(monkeypatch)
    async with cluster.process() as second:
        await until(lambda: cluster.reply(messages[1]).posts == 1, timeout_s=15, what="the second answer")
        await second.crash(monkeypatch)
    async with cluster.process():
        replies = [await cluster.answered(m) for m in messages]
    assert [r.text for r in replies] == [
        f"[emulator] You said: m{i} (message {i + 1} in this thread)" for i in range(3)]
    assert all(r.posts == 1 for r in replies)
    assert len(cluster.runs_on(only_thread(cluster))) == 3
    assert cluster.emulator.state.active_run_conflicts == 0


# --- several processes ------------------------------------------------------------------------


async def test_a_message_that_keeps_killing_processes_gets_a_clear_error_and_its_run_stopped(
    cluster: Cluster,
) -> None:
    async with cluster.process() as proc:
        await proc.runtime.worker.drain(0)  # intake only
        await proc.task
        message = await cluster.send(proc, "poison !slow=20", conversation="console:t:poison")
        store, backend = proc.runtime.store, proc.runtime.backends.backends["default"]
        # What MAX_ATTEMPTS interrupted attempts leave behind (two hand-backs do not count):
        await begin(store, message.conversation, "dead")
        thread_id = await backend.new_thread()  # type: ignore[attr-defined]
        await store.record_thread(message, "dead", "default", thread_id)
        profile = proc.runtime.config.profiles["helper"]
        events = backend.run(turn=Turn(profile_name="helper", profile=profile, thread_id=thread_id,
                                       text=message.text, message_id=message.id))
        started = await anext(events)
        await events.aclose()  # type: ignore[attr-defined]
        await store.record_run(message, "dead", started.run)  # type: ignore[union-attr]
        await store.record(message, "dead", attempts=str(MAX_ATTEMPTS + 2), handbacks="2")
        await store.redis.delete(store.keys.lease(message.conversation))
    async with cluster.process() as second:
        reply = await cluster.answered(message)
        record = await record_of(second, message)
    assert "Answering this message was interrupted too many times; please ask again." in reply.text
    assert "SB-" in reply.text  # the reference, also in the log line
    assert record["status"] == "failed" and record["run_cancelled"] == "gave up"
    (run_id,) = cluster.runs_on(thread_id)
    assert cluster.emulator.state.runs[run_id].status in ("cancelled", "cancelling")


async def test_drain_hands_the_conversation_to_another_process_at_once(cluster: Cluster) -> None:
    async with cluster.process() as first, cluster.process() as second:
        message = await cluster.send(first, "a long one !slow=3", conversation="console:t:drain")
        waiting = await cluster.send(first, "and then this", conversation="console:t:drain")
        await until(lambda: cluster.reply(message).posts == 1, what="the first part")
        assert first.runtime.worker.active_conversations == 1
        drained_at = time.monotonic()
        await first.runtime.worker.drain(0)  # the grace is over at once: hand back mid-run
        await first.task
        await until(lambda: second.runtime.worker.active_conversations == 1, timeout_s=LEASE_TTL_S,
                    what="the other process to take over")
        taken_s = time.monotonic() - drained_at
        replies = [await cluster.answered(m) for m in (message, waiting)]
    assert taken_s < 1.0, taken_s  # not after the lease expired
    assert replies[0].text.endswith("a long one (message 1 in this thread)") and replies[0].posts == 1
    assert replies[1].text.endswith("and then this (message 2 in this thread)")
    assert cluster.emulator.state.active_run_conflicts == 0


async def test_a_signal_for_a_conversation_being_handed_back_is_put_back(cluster: Cluster) -> None:
    """The race the fault suite found: a driver handing back (inbox checked, lease gone) must not
    take a signal that arrives meanwhile, or its acknowledgement swallows the signal for good."""
    async with cluster.process() as proc:
        await proc.runtime.worker.drain(0)
        await proc.task
        worker, store = proc.runtime.worker, proc.runtime.store
        message = await cluster.send(proc, "arrived during a hand-back", conversation="console:t:handback")
        [(entry_id, conversation)] = await store.read_work(0, worker.consumer, count=10, block_ms=100)
        closing = _Driver(conversation=conversation, token="t", valid_until=0.0, closing=True)
        worker._drivers[conversation] = closing
        worker._stopping.clear()  # a worker still reading, as during the hand-back
        await worker._on_signal(conversation, entry_id, reclaimed=False)
        assert closing.entries == []
        assert (await store.redis.xpending(store.keys.work(0), WORK_GROUP))["pending"] == 0
    async with cluster.process():
        reply = await cluster.answered(message)
    assert reply.text.endswith("arrived during a hand-back (message 1 in this thread)")


async def test_lease_lost_means_no_more_chat_writes(cluster: Cluster) -> None:
    async with cluster.process() as proc:
        message = await cluster.send(proc, "slowly !slow=3", conversation="console:t:stolen")
        reply = cluster.reply(message)
        await until(lambda: reply.posts == 1, what="the first part")
        store = proc.runtime.store
        await store.redis.set(store.keys.lease(message.conversation), "another-process")
        await until(lambda: proc.runtime.worker.active_conversations == 0, timeout_s=LEASE_TTL_S,
                    what="the driver to stop")
        writes = reply.edits
        await asyncio.sleep(0.5)
        assert reply.edits == writes and reply.done_calls == 0
        assert (await record_of(proc, message))["status"] != "answered"


async def test_fenced_sink_refuses_once_the_lease_is_not_certain() -> None:
    sinks = RecordingSinks()
    message = InboundMessage(event_id="e", conversation="c", text="t",
                             place=Place(platform="console", channel="c", user="u"))
    held = [True]
    sink = FencedSink(await sinks.open(message=message, existing_refs={}), held=lambda: held[0], conversation="c")
    ref = await sink.post("one", part=0)
    held[0] = False
    with pytest.raises(LeaseLost):
        await sink.edit(ref, "two", final=True)
    with pytest.raises(LeaseLost):
        await sink.post("three", part=1)
    assert sinks.reply(message.id).parts == {ref: "one"}


# --- backend trouble --------------------------------------------------------------------------


async def test_5xx_and_429_bursts_beyond_the_sdk_retries_are_retried(cluster: Cluster) -> None:
    async with cluster.process() as proc:
        await cluster.answered(await cluster.send(proc, "warm up"))
        cluster.emulator.fail_next(500, count=3)
        cluster.emulator.fail_next(429, count=2)
        reply = await cluster.answered(await cluster.send(proc, "through the storm"))
        mid = await cluster.send(proc, "cut mid-stream !slow=1 !drop")
        mid_reply = await cluster.answered(mid)
    assert reply.text == "[emulator] You said: through the storm (message 2 in this thread)"
    assert mid_reply.text == "[emulator] You said: cut mid-stream (message 3 in this thread)"
    assert mid_reply.posts == 1
    assert cluster.emulator.state.active_run_conflicts == 0


async def test_backend_down_past_the_retry_deadline_is_one_clear_error(cluster: Cluster) -> None:
    async with cluster.process() as proc:
        proc.runtime.engine.retry = RetryPolicy(deadline_s=0.5, first_delay_s=0.05, max_delay_s=0.1)
        cluster.emulator.fail_next(503, count=10_000)
        try:
            reply = await cluster.answered(await cluster.send(proc, "hello?"))
        finally:
            cluster.emulator._api.failures.clear()
    assert "unavailable" in reply.text and "(ref SB-" in reply.text
    assert reply.posts == 1


async def test_stuck_run_is_cancelled_reported_and_recorded(cluster: Cluster) -> None:
    async with cluster.process(gateway={"run_timeout_s": 1}) as proc:
        message = await cluster.send(proc, "never ends !slow=60", conversation="console:t:stuck")
        reply = await cluster.answered(message)
        assert "took too long" in reply.text and "(ref SB-" in reply.text
        record = await record_of(proc, message)
        assert record["status"] == "failed" and record["run_cancelled"] == "timeout"
        (run_id,) = cluster.runs_on(only_thread(cluster))
        assert cluster.emulator.run(run_id).status == "cancelled"
        after = await cluster.answered(await cluster.send(proc, "next", conversation="console:t:stuck"))
    assert after.text == "[emulator] You said: next (message 2 in this thread)"
    assert cluster.emulator.state.active_run_conflicts == 0


# --- Redis trouble ------------------------------------------------------------------------------


async def test_redis_restart_mid_answer_loses_nothing(cluster: Cluster, redis_server: RedisServer) -> None:
    async with cluster.process() as proc:
        message = await cluster.send(proc, "during a restart !slow=2", conversation="console:t:restart")
        await until(lambda: cluster.reply(message).posts == 1, what="the first part")
        await asyncio.to_thread(redis_server.restart)
        reply = await cluster.answered(message, timeout_s=20)
        assert reply.text == "[emulator] You said: during a restart (message 1 in this thread)"
        assert reply.posts == 1
        follow_up = await cluster.answered(await cluster.send(proc, "still there?", conversation="console:t:restart"))
    assert follow_up.text.endswith("(message 2 in this thread)")  # the thread mapping survived
    assert len(cluster.emulator.state.threads) == 1


async def test_redis_down_means_not_ready_and_no_intake_then_work_resumes(
    cluster: Cluster, redis_server: RedisServer,
) -> None:
    async with cluster.process() as proc:
        server = HttpServer("127.0.0.1", free_port(), [redis_check(proc.runtime.store)])
        await server.start()
        try:
            assert redis_server.proc is not None
            await asyncio.to_thread(redis_server.stop)
            with pytest.raises(StoreUnavailable):
                await cluster.send(proc, "lost?")
            ready = await _get_status(server, "/readyz")
            await asyncio.sleep(1.2)  # the worker's loops meet the outage
            await asyncio.to_thread(redis_server.start)
            assert await _get_status(server, "/readyz") == 200
        finally:
            await server.stop()
        reply = await cluster.answered(await cluster.send(proc, "back again"))
    assert ready == 503
    assert reply.text == "[emulator] You said: back again (message 1 in this thread)"


async def _get_status(server: HttpServer, path: str) -> int:
    import httpx2

    async with httpx2.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{server.port}{path}")).status_code


async def test_work_stream_lost_with_redis_is_recreated(cluster: Cluster) -> None:
    async with cluster.process() as proc:
        store = proc.runtime.store
        await store.redis.delete(store.keys.work(0))  # the stream and its consumer group are gone
        await asyncio.sleep(0.3)
        reply = await cluster.answered(await cluster.send(proc, "after the loss"))
        groups = await store.redis.xinfo_groups(store.keys.work(0))
    assert reply.text.startswith("[emulator] You said: after the loss")
    assert [g["name"] for g in groups] == [WORK_GROUP]


def test_failover_defaults_are_seconds_not_minutes() -> None:
    from core.config import GatewayConfig
    from core.store import StoreLimits

    assert GatewayConfig().lease_ttl_s == StoreLimits().lease_ttl_s == 10.0
    assert GatewayConfig().shutdown_grace_s == 20.0
