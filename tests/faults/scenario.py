"""What the fault suite sends, the faults it injects meanwhile, and how it judges the result.

Conversations are Slack threads: an @mention starts each, follow-ups arrive in the thread. Each
message asks for something the emulator answers recognisably — "You said: <text> (message N in
this thread)", whose N also proves that the backend thread got each user message exactly once —
and some are slow, or call a slow tool, or a tool that never answers in time. The judge reads
the bot's messages in each thread, oldest first, and matches them to the messages in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.emulator.assistants import AssistantsEmulator
from tests.conftest import RedisServer
from tests.faults.fleet import HANG_TOOL_TIMEOUT_S, Fleet, RecordingSlack

ERROR_LINE = re.compile(r"⚠️ .*\(ref SB-[A-Z0-9]{8}\)")


@dataclass(frozen=True)
class Plan:
    conversations: int = 40
    per_conversation: int = 10
    gateways: int = 3
    lease_ttl_s: float = 3.0
    grace_s: float = 1.0
    fault_every_s: float = 2.0
    max_faults: int = 30
    """A budget, so a slow machine (each fault slowing the next phase) cannot loop into a timeout."""
    duplicate_p: float = 0.15
    wait_for_answer_p: float = 0.6
    cycle: tuple[str, ...] = ("kill9", "backend_500", "kill9", "redis_restart", "kill9", "backend_429", "sigterm")
    """Faults are injected in this order (shuffled per round), one every ``fault_every_s`` ± 50 %."""

    @property
    def messages(self) -> int:
        return self.conversations * self.per_conversation


SOAK = Plan(conversations=150, per_conversation=40, fault_every_s=1.5, max_faults=250)


@dataclass
class Sent:
    """One user message: what it says, what answers it, when it was acknowledged."""

    conversation: int
    index: int
    text: str
    kind: str
    expect: Expect
    acked_at: float = 0.0
    deliveries: int = 0
    answered_at: float | None = None


@dataclass
class Conversation:
    number: int
    channel: str
    thread_ts: str = ""
    messages: list[Sent] = field(default_factory=list)


@dataclass
class Verdict:
    answered: int = 0
    clear_errors: int = 0
    lost: int = 0
    duplicated: int = 0
    stray: int = 0
    out_of_order: int = 0
    open_streams: int = 0
    orphan_partials: int = 0
    """Unfinished starts of an answer that was then written in full in another message: a gateway
    killed between the chat post and the write recording it (see ``core.ports.FindsPostedParts``)."""
    details: list[str] = field(default_factory=list)
    """One line per problem found (conversation, thread, the message text), for the failure report."""

    def problem(self, kind: str, conversation: Conversation, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.details.append(f"{kind}: conversation {conversation.number} "
                            f"({conversation.channel}/{conversation.thread_ts}): {text[:120]!r}")


@dataclass
class Faults:
    events: list[tuple[str, float]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[str, float]] = field(default_factory=list)
    """(kind, wall-clock time) of each disruptive fault, to read beside the gateways' logs."""

    def note(self, kind: str, *, disruptive: bool = True) -> None:
        """Count a fault; ``disruptive`` ones are the events recovery times are measured from."""
        self.counts[kind] += 1
        if disruptive:
            self.events.append((kind, time.monotonic()))
            self.timeline.append((kind, time.time()))


Expect = Callable[[str, int], bool]
"""Whether a bot message is the final answer, given how many earlier messages of the conversation
ended in a clear error (those may never have reached the backend thread, so they may be missing
from its message count)."""


def _exact(text: str) -> Expect:
    return lambda shown, _errors: shown == text


def _said(clean: str, index: int) -> Expect:
    pattern = re.compile(rf"\[emulator\] You said: {re.escape(clean)} \(message (\d+) in this thread\)")

    def matches(shown: str, errors: int) -> bool:
        found = pattern.fullmatch(shown)
        return found is not None and index - errors <= int(found.group(1)) <= index

    return matches


def new_message(conversation: int, index: int) -> Sent:
    """A random kind of message and the answer that proves it was answered once, in order."""
    tag = f"c{conversation}m{index}"
    kind = random.choices(["plain", "slow", "slow_tool", "hang_tool"], weights=[50, 28, 12, 10])[0]
    if kind == "plain":
        return Sent(conversation, index, f"{tag} hello", kind, _said(f"{tag} hello", index))
    if kind == "slow":
        text = f"{tag} slowly !slow={random.uniform(1.0, 3.0):.1f}"
        return Sent(conversation, index, text, kind, _said(f"{tag} slowly", index))
    args = json.dumps({"n": tag})
    if kind == "slow_tool":
        return Sent(conversation, index, f"{tag} call slow_tool {args}", kind,
                    _exact(f"[emulator] The tool said: slow ok {tag}"))
    timeout = f"did not answer within {HANG_TOOL_TIMEOUT_S:g} s"
    return Sent(conversation, index, f"{tag} call hang_tool {args}", kind,
                lambda shown, _errors: shown.startswith('[emulator] The tool said: {"error"') and timeout in shown)


def plan_conversations(plan: Plan) -> list[Conversation]:
    return [Conversation(number=c, channel=f"C0FAULT{c % 7}",
                         messages=[new_message(c, k) for k in range(1, plan.per_conversation + 1)])
            for c in range(plan.conversations)]


# --- sending ----------------------------------------------------------------------------------


@dataclass
class Sender:
    fleet: Fleet
    slack: RecordingSlack
    plan: Plan
    faults: Faults
    _duplicates: set[asyncio.Task[None]] = field(default_factory=set)

    async def warm_up(self) -> None:
        """One answer before any fault: the assistant exists and its ID is cached, as in production."""
        conversation = Conversation(number=-1, channel="C0WARMUP", messages=[new_message(-1, 1)])
        conversation.messages[0] = Sent(-1, 1, "warm up", "plain", _said("warm up", 1))
        await self.converse(conversation)
        await self._until_answered(conversation, 1)

    async def converse(self, conversation: Conversation) -> None:
        """Send the conversation's messages in order; sometimes wait for the answer, sometimes not."""
        for sent in conversation.messages:
            if sent.index == 1:
                event = self.slack.mention_event(text=sent.text, channel=conversation.channel)
                conversation.thread_ts = str(event["ts"])
            else:
                event = self.slack.message_event(text=sent.text, channel=conversation.channel,
                                                 thread_ts=conversation.thread_ts)
            payload = self.slack.event_callback(event)
            sent.acked_at, sent.deliveries = await self.fleet.deliver(payload)
            if sent.deliveries > 1:
                self.faults.counts["redelivered_after_refusal"] += sent.deliveries - 1
            if random.random() < self.plan.duplicate_p:
                self._duplicate_later(payload)
            if random.random() < self.plan.wait_for_answer_p:
                await self._until_answered(conversation, sent.index)
                await asyncio.sleep(random.uniform(0.0, 0.3))

    def _duplicate_later(self, payload: dict[str, Any]) -> None:
        async def again() -> None:
            await asyncio.sleep(random.uniform(0.0, 1.5))
            self.faults.note("duplicate_delivery", disruptive=False)
            await self.fleet.deliver(payload, retry_num=1)

        task = asyncio.create_task(again())
        self._duplicates.add(task)
        task.add_done_callback(self._duplicates.discard)

    async def duplicates_done(self) -> None:
        await asyncio.gather(*list(self._duplicates))

    async def _until_answered(self, conversation: Conversation, count: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while answered_in_order(self.slack, conversation) < count:
            if time.monotonic() > deadline:
                raise Unanswered([conversation], self.slack)
            await asyncio.sleep(0.1)


class Unanswered(AssertionError):
    """Conversations whose answers did not all arrive, with what their threads show."""

    def __init__(self, conversations: list[Conversation], slack: RecordingSlack) -> None:
        self.conversations = conversations
        lines = []
        for c in conversations:
            lines.append(f"conversation {c.number} (thread {c.channel}/{c.thread_ts}), "
                         f"{answered_in_order(slack, c)} of {len(c.messages)} answered in order:")
            lines += [f"  sent {s.index}: {s.text!r} (acked {s.acked_at:.1f})" for s in c.messages]
            lines += [f"  bot  {ts}: {text!r}{' (streaming)' if streaming else ''}"
                      for ts, text, streaming in thread_texts(slack, c)]
        super().__init__("\n".join(lines))


# --- faults -------------------------------------------------------------------------------------


async def inject_faults(*, fleet: Fleet, redis: RedisServer, emulator: AssistantsEmulator, plan: Plan,
                        faults: Faults, stop: asyncio.Event, talking: Callable[[], int]) -> None:
    """A fault every ``fault_every_s`` (± 50 %) while the load lasts. Once fewer than a tenth of the
    conversations still talk, no more: the last stragglers would otherwise take every fault meant
    for the whole fleet (a 429 burst of six requests all landing on one answer's retries)."""
    upcoming: list[str] = []
    tail = max(2, plan.conversations // 10)
    while not stop.is_set() and len(faults.events) < plan.max_faults and talking() >= tail:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(plan.fault_every_s * 0.5, plan.fault_every_s * 1.5))
            return
        if not upcoming:
            upcoming = random.sample(plan.cycle, len(plan.cycle))
        kind = upcoming.pop()
        if kind == "kill9" and await fleet.kill9() is not None:
            faults.note("kill9")
        elif kind == "sigterm" and await fleet.sigterm() is not None:
            faults.note("sigterm")
        elif kind == "redis_restart":
            faults.note("redis_restart")
            await asyncio.to_thread(redis.crash_restart)
        elif kind in ("backend_429", "backend_500"):
            count = random.randint(2, 6)
            emulator.fail_next(int(kind[-3:]), count=count)
            faults.note(kind)
            faults.counts[f"{kind}_requests"] += count


# --- judging --------------------------------------------------------------------------------------


def thread_texts(slack: RecordingSlack, conversation: Conversation) -> list[tuple[str, str, bool]]:
    return [(m.ts, m.text, m.streaming) for m in slack.bot_messages(conversation.channel, conversation.thread_ts)]


def answered_in_order(slack: RecordingSlack, conversation: Conversation) -> int:
    """How many of the conversation's messages have their final answer, counted from the first.
    A message still streaming is skipped when later ones follow it (a killed attempt's start)."""
    shown = thread_texts(slack, conversation)
    done = errors = 0
    for position, (_, text, streaming) in enumerate(shown):
        if done >= len(conversation.messages):
            break
        if streaming:
            if position == len(shown) - 1:
                break
            continue
        if conversation.messages[done].expect(text, errors):
            done += 1
        elif ERROR_LINE.search(text):
            done, errors = done + 1, errors + 1
    return done


def judge(slack: RecordingSlack, conversation: Conversation, verdict: Verdict) -> None:
    """Match the thread's bot messages, oldest first, to the conversation's messages in order."""
    expected = conversation.messages
    position = errors = 0
    finals: list[str] = []
    strays: list[tuple[str, bool]] = []
    for ts, text, streaming in thread_texts(slack, conversation):
        current = expected[position] if position < len(expected) else None
        if streaming:  # a finished answer's stream is stopped: this one was left by a killed attempt
            strays.append((text, streaming))
        elif current is not None and (current.expect(text, errors) or ERROR_LINE.search(text)):
            current.answered_at = slack.first_shown(ts, text)
            if current.expect(text, errors):
                verdict.answered += 1
            else:
                verdict.clear_errors += 1
                errors += 1
            finals.append(text)
            position += 1
        elif position > 0 and (expected[position - 1].expect(text, errors) or ERROR_LINE.search(text)):
            verdict.problem("duplicated", conversation, text)
        elif any(later.expect(text, errors) for later in expected[position + 1:]):
            verdict.problem("out_of_order", conversation, text)
        else:
            strays.append((text, streaming))
    for text, streaming in strays:
        if streaming and any(final.startswith(text) for final in finals):
            verdict.problem("orphan_partials", conversation, text)
        else:
            verdict.problem("stray", conversation, text)
            verdict.open_streams += int(streaming)
    for sent in expected[position:]:
        verdict.problem("lost", conversation, sent.text)


def recovery_times(conversations: list[Conversation], faults: Faults) -> dict[str, float]:
    """Per fault kind: the longest time from a fault to the answer of a message in flight at it
    (acknowledged before, answered after), counting each conversation's oldest such message."""
    worst: dict[str, float] = {}
    for kind, at in faults.events:
        for conversation in conversations:
            in_flight = [s for s in conversation.messages
                         if s.acked_at < at and s.answered_at is not None and s.answered_at > at]
            if in_flight:
                worst[kind] = max(worst.get(kind, 0.0), in_flight[0].answered_at - at)  # type: ignore[operator]
    return {kind: round(value, 2) for kind, value in sorted(worst.items())}


def latencies(conversations: list[Conversation]) -> dict[str, float]:
    values = sorted(s.answered_at - s.acked_at for c in conversations for s in c.messages
                    if s.answered_at is not None and s.answered_at >= s.acked_at)
    if not values:
        return {}
    return {"p50": round(statistics.median(values), 2), "p99": round(values[int(len(values) * 0.99) - 1], 2),
            "max": round(values[-1], 2)}
