"""The face core shows to platform adapters: accept messages, look up and reset conversations.

Adapters translate a platform event into an ``InboundMessage`` and call ``accept`` *before*
acknowledging the event: once ``accept`` returns, the message is durable and will be answered
exactly once (by this process or another). If it raises ``StoreUnavailable``, nothing was
recorded and the adapter must not acknowledge success, so the platform delivers it again.

Intake refuses, before anything is recorded, with a ``MessageRejected`` the adapter shows
(unless ``silent``): bad input, a place the allowlists exclude (``NotEnabledHere``, told once
per channel a day), and a person or channel over the profile's rate limit (``RateLimited``).
"""

from __future__ import annotations

import logging
import time

from core import access
from core.audit import BindingLog
from core.bindings import Binding, BindingResolver
from core.config import Config
from core.errors import SwitchboardError
from core.metrics import MESSAGES_RECEIVED
from core.models import InboundMessage, Place
from core.ports import ReplySinkFactory
from core.ratelimit import RateLimiter
from core.store import Accepted, Store

log = logging.getLogger(__name__)

KNOWN_FOR_S = 600.0
"""How long a conversation seen here counts as existing without asking Redis (it lives at least
``conversation_ttl_s``, one hour or more, after its last message; nothing else deletes it)."""
KNOWN_MAX = 10_000


class MessageRejected(SwitchboardError):
    """Bad input (e.g. an oversized message): nothing was recorded; show ``user_message``,
    unless ``silent`` (the person was already told, e.g. in the same channel a moment ago)."""

    def __init__(self, user_message: str, *, silent: bool = False) -> None:
        self.user_message = user_message
        self.silent = silent
        super().__init__(user_message)


class NotEnabledHere(MessageRejected):
    """The allowlists (config ``access:``) exclude this place: nothing was recorded."""


class RateLimited(MessageRejected):
    """The person or channel is over the profile's rate limit: nothing was recorded or queued."""

    def __init__(self, user_message: str, *, retry_after_s: int) -> None:
        super().__init__(user_message)
        self.retry_after_s = retry_after_s


class Gateway:
    def __init__(self, *, store: Store, config: Config) -> None:
        self.store = store
        self._config = config
        self.bindings = BindingResolver(store=store, config=config)
        self.binding_log = BindingLog(store.redis, keys=store.keys, on_change=lambda: self.bindings.forget())
        self.limiter = RateLimiter(store.redis, keys=store.keys)
        self.sinks: dict[str, ReplySinkFactory] = {}
        self._known: dict[str, float] = {}  # conversation -> monotonic time it is known to exist until; oldest first

    @property
    def config(self) -> Config:
        return self._config

    def apply_config(self, config: Config) -> None:
        """Use a new, already validated config for everything from now on (hot reload)."""
        self._config = config
        self.bindings = BindingResolver(store=self.store, config=config)

    def register_platform(self, platform: str, sinks: ReplySinkFactory) -> None:
        """Tell core how to write answers on ``platform`` (called by the adapter at start)."""
        self.sinks[platform] = sinks

    async def accept(self, message: InboundMessage) -> Accepted:
        """Durably queue ``message`` for an answer; a redelivered event returns ``duplicate=True``."""
        started = time.perf_counter()
        platform = message.place.platform
        limit = self._config.gateway.max_message_chars
        if len(message.text) > limit:
            MESSAGES_RECEIVED.labels(platform=platform, outcome="rejected").inc()
            raise MessageRejected(
                f"That message is too long ({len(message.text):,} characters; the limit is {limit:,})."
            )
        if not message.text.strip():
            MESSAGES_RECEIVED.labels(platform=platform, outcome="rejected").inc()
            raise MessageRejected("That message is empty: say something and I'll answer.")
        if message.profile is not None and message.profile not in self._config.profiles:
            known = ", ".join(self._config.profiles)
            raise MessageRejected(f"There is no profile {message.profile!r}. Known: {known}.")
        await self._admit(message)
        accepted = await self.store.accept(message)
        self._remember(message.conversation)
        outcome = "duplicate" if accepted.duplicate else "accepted"
        MESSAGES_RECEIVED.labels(platform=platform, outcome=outcome).inc()
        log.info("intake", extra={"event": "intake", "message_id": accepted.message_id, "outcome": outcome,
                                  "conversation": message.conversation, "platform": platform,
                                  "ms": round((time.perf_counter() - started) * 1000, 2)})
        return accepted

    async def _admit(self, message: InboundMessage) -> None:
        """Raise ``NotEnabledHere`` or ``RateLimited`` if the message must not be taken."""
        config, place = self._config, message.place
        if not access.is_allowed(config.access, place):
            MESSAGES_RECEIVED.labels(platform=place.platform, outcome="not_enabled").inc()
            first = await access.first_notice(self.store.redis, self.store.keys, place)
            raise NotEnabledHere(access.refusal(place), silent=not first)
        if not any(p.rate_limit.is_set for p in config.profiles.values()):
            return  # no limits configured: no Redis round trip
        profile = message.profile or (await self.bindings.resolve(place)).profile
        chosen = config.profiles.get(profile)  # None if a reload removed it meanwhile
        if chosen is None or not chosen.rate_limit.is_set:
            return
        refusal = await self.limiter.hit(place=place, profile=profile, limits=chosen.rate_limit,
                                         event_id=message.event_id)
        if refusal is not None:
            MESSAGES_RECEIVED.labels(platform=place.platform, outcome="rate_limited").inc()
            raise RateLimited(refusal.user_message(), retry_after_s=refusal.retry_after_s)

    def allowed_here(self, place: Place) -> bool:
        """True if the allowlists let the bot answer at ``place``."""
        return access.is_allowed(self._config.access, place)

    async def has_conversation(self, conversation: str) -> bool:
        """True once any message was accepted for ``conversation`` (e.g. the bot's Slack thread).

        Asks Redis only for conversations this process has not seen in the last ``KNOWN_FOR_S``:
        a reply in a thread the bot follows then costs no extra round trip.
        """
        until = self._known.get(conversation)
        if until is not None and until > time.monotonic():
            return True
        found = await self.store.has_conversation(conversation)
        if found:
            self._remember(conversation)
        return found

    def _remember(self, conversation: str) -> None:
        known = self._known
        known.pop(conversation, None)  # re-inserted last: the dict stays oldest first
        known[conversation] = time.monotonic() + KNOWN_FOR_S
        if len(known) > KNOWN_MAX:
            del known[next(iter(known))]

    async def reset(self, conversation: str) -> None:
        """The next message in ``conversation`` starts a new backend thread."""
        await self.store.reset(conversation)

    async def binding(self, place: Place, *, fresh: bool = False) -> Binding:
        """The profile answering at ``place``; see ``BindingResolver.resolve`` for ``fresh``."""
        return await self.bindings.resolve(place, fresh=fresh)

    def profile_names(self) -> list[str]:
        return list(self._config.profiles)
