"""Driving the gateway as Slack does, and seeing its answers land: conversations, signed events, timings.

Every message the harness sends carries a tag (``bench m123 hello``); the Assistants emulator
answers ``[emulator] You said: bench m123 hello (message N in this thread)``. ``BenchSlack`` (the
Slack emulator) watches the writes that can finish an answer (``chat.stopStream``, ``chat.update``,
``chat.postMessage``) and marks the tag answered at the first write after which the message shows
the whole answer and is no longer streaming: that is when a person in the thread sees it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.emulators.slack import SlackEmulator

MAX_CONNECTIONS = 400
FINAL_WRITES = frozenset({"chat.stopStream", "chat.update", "chat.postMessage"})
ANSWER_END = "in this thread)"
_ANSWER_TAG = re.compile(r"You said: bench (m\d+) ")
_PROMPT_TAG = re.compile(r"bench (m\d+) ")


@dataclass
class Sample:
    """One message sent: when, how its ack went, when its answer was complete (``perf_counter`` seconds)."""

    tag: str
    kind: str  # "new" (a top-level @mention) or "reply" (a message in the bot's thread)
    sent_at: float = 0.0
    ack_s: float | None = None
    status: int | None = None
    error: str | None = None
    answered_at: float | None = None
    backend_s: float = 0.0
    abandoned: bool = False  # waited for in vain: counted unanswered, not waited for again

    @property
    def e2e_s(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.sent_at

    @property
    def added_s(self) -> float | None:
        """End to end minus the time the backend emulator spent on this message's run."""
        e2e = self.e2e_s
        return None if e2e is None else e2e - self.backend_s


class Tracker:
    """Samples by tag, and a future per tag that ``answered`` resolves."""

    def __init__(self) -> None:
        self.samples: dict[str, Sample] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._seq = itertools.count(1)

    def new(self, kind: str) -> Sample:
        sample = Sample(tag=f"m{next(self._seq)}", kind=kind)
        self.samples[sample.tag] = sample
        self._waiters[sample.tag] = asyncio.get_running_loop().create_future()
        return sample

    def answered(self, tag: str) -> None:
        sample = self.samples.get(tag)
        if sample is None or sample.answered_at is not None:
            return
        sample.answered_at = time.perf_counter()
        waiter = self._waiters.pop(tag, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, samples: Iterable[Sample], timeout_s: float) -> int:
        """Wait until these samples are answered or ``timeout_s`` passed; returns how many are still unanswered."""
        pending = [self._waiters[s.tag] for s in samples if s.answered_at is None and s.tag in self._waiters]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        return sum(1 for s in samples if s.answered_at is None)

    async def drain(self, timeout_s: float) -> int:
        """Wait (up to ``timeout_s``) until every message sent so far was answered; returns how many were
        still unanswered (refused and abandoned messages are not waited for)."""
        outstanding = [s for s in self.samples.values()
                       if s.answered_at is None and s.status == 200 and not s.abandoned]
        return await self.wait(outstanding, timeout_s)

    def abandon(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            if sample.answered_at is None:
                sample.abandoned = True

    def attribute_backend_time(self, runs: list[tuple[str, float]]) -> None:
        """Copy each run's ``backend_s`` to the sample whose message started it (its tag ends the prompt)."""
        for prompt, backend_s in runs:
            tags = _PROMPT_TAG.findall(prompt)
            sample = self.samples.get(tags[-1]) if tags else None
            if sample is not None:
                sample.backend_s = backend_s


class BenchSlack(SlackEmulator):
    """The Slack emulator, telling ``tracker`` when an answer's final text has been written."""

    def __init__(self, tracker: Tracker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracker = tracker

    async def _dispatch(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        body = await super()._dispatch(method, args)
        if method in FINAL_WRITES:
            message = self.messages.get(str(body.get("ts") or args.get("ts") or ""))
            if message is not None and not message.streaming and message.text.endswith(ANSWER_END):
                match = _ANSWER_TAG.search(message.text)
                if match:
                    self.tracker.answered(match.group(1))
        return body

    def forget(self) -> None:
        """Drop what the emulator recorded so far (between phases, to keep the harness's memory flat)."""
        self.calls.clear()
        self.messages.clear()
        self.statuses.clear()
        self.reactions.clear()
        self.said.clear()


@dataclass
class Conversation:
    """A Slack thread the bench talks in; ``thread_ts`` is set by its first (@mention) message."""

    channel: str
    user: str
    thread_ts: str | None = None


@dataclass
class Sender:
    """Signs and POSTs Events API deliveries to the gateway, timing each ack."""

    slack: BenchSlack
    url: str
    tracker: Tracker
    session: aiohttp.ClientSession = field(init=False)

    async def __aenter__(self) -> Sender:
        # Enough connections for any open-loop rate here, few enough for the default 1024 open files.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def send(self, conversation: Conversation) -> Sample:
        """One message in ``conversation``: an @mention that starts it, else a reply in its thread."""
        slack = self.slack
        sample = self.tracker.new("new" if conversation.thread_ts is None else "reply")
        text = f"bench {sample.tag} hello"
        if conversation.thread_ts is None:
            event = slack.mention_event(text=text, channel=conversation.channel, user=conversation.user)
            conversation.thread_ts = str(event["ts"])
        else:
            event = slack.message_event(text=text, channel=conversation.channel, user=conversation.user,
                                        thread_ts=conversation.thread_ts)
        body = json.dumps(slack.event_callback(event))
        headers = slack.signed_headers(body)
        sample.sent_at = time.perf_counter()
        try:
            async with self.session.post(self.url, data=body.encode(), headers=headers) as response:
                await response.read()
                sample.status = response.status
        except (aiohttp.ClientError, OSError) as exc:
            sample.error = type(exc).__name__
        sample.ack_s = time.perf_counter() - sample.sent_at
        return sample


def conversations(count: int, *, channels: int = 10, prefix: str = "C0BENCH") -> list[Conversation]:
    """``count`` new conversations spread over a few channels and users."""
    return [Conversation(channel=f"{prefix}{i % channels}", user=f"U0USER{i % 50}") for i in range(count)]


async def sleep_until(loop: asyncio.AbstractEventLoop, moment: float) -> None:
    delay = moment - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def open_loop(sender: Sender, pool: list[Conversation], *, rate: float, count: int) -> list[Sample]:
    """Send ``count`` messages at ``rate`` per second, round-robin over ``pool``, never waiting for acks
    or answers (open loop: a slow gateway does not slow the arrivals)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[Sample]] = []
    async with asyncio.TaskGroup() as group:
        for i in range(count):
            await sleep_until(loop, start + i / rate)
            tasks.append(group.create_task(sender.send(pool[i % len(pool)])))
    return [t.result() for t in tasks]


async def bounded(sender: Sender, pool: list[Conversation], *, in_flight: int, answer_timeout_s: float) -> list[Sample]:
    """One message in each conversation of ``pool``, as fast as the gateway answers them: at most
    ``in_flight`` messages wait for their answer at any time (closed loop)."""
    slots = asyncio.Semaphore(in_flight)
    samples: list[Sample] = []

    async def one(conversation: Conversation) -> None:
        try:
            sample = await sender.send(conversation)
            samples.append(sample)
            if sample.status == 200:
                await sender.tracker.wait([sample], answer_timeout_s)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        for conversation in pool:
            await slots.acquire()  # a task is started only when a slot is free (no thousands waiting)
            group.create_task(one(conversation))
    return samples


async def paced_conversations(sender: Sender, pool: list[Conversation], *, period_s: float, duration_s: float,
                              answer_timeout_s: float) -> list[Sample]:
    """Every conversation sends a message each ``period_s`` (phases spread evenly), with at most one
    message waiting for its answer: the next is sent when both the answer came and its turn is due."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + duration_s
    samples: list[Sample] = []

    async def talk(index: int, conversation: Conversation) -> None:
        due = start + period_s * index / len(pool)
        while due < end:
            await sleep_until(loop, due)
            sample = await sender.send(conversation)
            samples.append(sample)
            if sample.status != 200 or await sender.tracker.wait([sample], answer_timeout_s):
                return  # refused or unanswered: counted, and this conversation stops
            due = max(due + period_s, loop.time())

    async with asyncio.TaskGroup() as group:
        for index, conversation in enumerate(pool):
            group.create_task(talk(index, conversation))
    return samples
