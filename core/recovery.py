"""The pieces the engine uses to survive trouble: backend retries, and a sink that stops writing
when the conversation's lease is no longer ours.

- ``Backoff``: 429 and 5xx (and dropped connections, request timeouts) are tried again with
  exponential backoff and jitter until a deadline; a ``retry-after`` hint is honoured.
- ``FencedSink``: wraps the chat sink of one answer. Before every post or edit it asks the
  worker's lease clock whether the lease is still certainly ours; if not it raises ``LeaseLost``,
  so a process that lost its conversation (stalled, cut off from Redis) posts nothing more.
- ``despite_cancel``: a post and the write that records it must not be torn apart by a
  cancellation (shutdown, lease lost): the chat message would exist without a record, and the
  next holder would post a second one. Both are finished first; then the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from core.errors import BackendError, BackendRateLimited, BackendTimeout, BackendUnavailable, LeaseLost
from core.ports import ReplySink

log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BackendError], ...] = (BackendRateLimited, BackendUnavailable, BackendTimeout)

LeaseClock = Callable[[], bool]
"""True while the conversation's lease is certainly still ours (by this process's clock)."""
SETTLE_S = 5.0
"""How long a cancelled post or record may take to finish before it is abandoned."""
T = TypeVar("T")


async def despite_cancel(step: Awaitable[T], *, on_cancel: Callable[[T], Awaitable[None]] | None = None) -> T:
    """``await step``, but if the caller is cancelled meanwhile, let the step finish (up to
    ``SETTLE_S``), pass its result to ``on_cancel``, and only then re-raise the cancellation."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        done, _ = await asyncio.wait([task], timeout=SETTLE_S)
        if not done:
            task.cancel()
            task.add_done_callback(_log_unsettled)
        elif not task.cancelled() and task.exception() is not None:
            _log_unsettled(task)
        elif on_cancel is not None and not task.cancelled():
            await asyncio.wait_for(on_cancel(task.result()), SETTLE_S)
        raise


def _log_unsettled(task: asyncio.Future[Any]) -> None:
    """A step ``despite_cancel`` let finish failed after all: say so (its caller is gone)."""
    if task.cancelled() or task.exception() is None:
        return
    exc = task.exception()
    log.warning("a step left to finish during cancellation failed: %s", exc, extra={
        "event": "settle_failed", "error": type(exc).__name__})


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying a backend that answers 429/5xx: ``deadline_s`` from the first failure."""

    deadline_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay_s(self, attempt: int, error: BackendError) -> float:
        """Equal jitter over an exponential step; never shorter than the server's ``retry-after``."""
        step = min(self.max_delay_s, self.first_delay_s * 2**attempt)
        hinted = error.retry_after_s if isinstance(error, BackendRateLimited) else None
        return max(hinted or 0.0, random.uniform(step / 2, step))


@dataclass
class Backoff:
    """One answer's retries: ``pause`` sleeps before the next try, or re-raises when out of time."""

    policy: RetryPolicy
    run_deadline: float | None = None
    """Loop time the whole run must end by; no retry waits past it."""
    attempt: int = 0
    _deadline: float | None = field(default=None, repr=False)

    async def pause(self, error: BackendError) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._deadline is None:
            self._deadline = now + self.policy.deadline_s
        delay = self.policy.delay_s(self.attempt, error)
        limit = self._deadline if self.run_deadline is None else min(self._deadline, self.run_deadline)
        if now + delay > limit:
            raise error
        self.attempt += 1
        log.warning("backend trouble; trying again", extra={
            "event": "backend_retry", "error": type(error).__name__, "status": error.status,
            "attempt": self.attempt, "delay_s": round(delay, 2)})
        await asyncio.sleep(delay)


class FencedSink:
    """``ReplySink`` that refuses to write (``LeaseLost``) once ``held()`` says the lease may be gone."""

    def __init__(
        self, sink: ReplySink, *, held: LeaseClock | None, conversation: str,
        keep_interrupted: Callable[[int, str], Awaitable[None]] | None = None,
    ) -> None:
        """``keep_interrupted(part, ref)`` records a message whose post finished after a cancellation."""
        self._sink = sink
        self._held = held
        self._conversation = conversation
        self._keep_interrupted = keep_interrupted
        self.limit_chars = sink.limit_chars
        self.min_edit_interval_s = sink.min_edit_interval_s

    async def working(self) -> None:
        await self._sink.working()

    async def post(self, text: str, *, part: int) -> str:
        self._check()
        keep = self._keep_interrupted
        return await despite_cancel(self._sink.post(text, part=part),
                                    on_cancel=None if keep is None else lambda ref: keep(part, ref))

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        self._check()
        await self._sink.edit(ref, text, final=final)

    async def done(self) -> None:
        await self._sink.done()

    def _check(self) -> None:
        if self._held is not None and not self._held():
            raise LeaseLost(self._conversation)
