"""Bolt listeners: translate → core → acknowledge. Nothing else happens before the ack.

The Bolt app runs with ``process_before_response=True``, so Slack gets its answer when a listener
returns: after ``gateway.accept`` has made the message durable, never before, and never a
success when intake failed (``StoreUnavailable`` → 503, so Slack delivers the event again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.events import BotIdentity, Candidate, command_place, translate
from core.commands import CommandContext, assistant_command
from core.errors import StoreUnavailable, SwitchboardError
from core.gateway import Gateway, MessageRejected
from core.logs import new_reference
from core.models import InboundMessage

log = logging.getLogger(__name__)


def ephemeral(markdown: str) -> dict[str, Any]:
    """A slash command answer only the caller sees; Slack renders the ``markdown`` block itself."""
    return {"response_type": "ephemeral", "text": markdown, "blocks": [{"type": "markdown", "text": markdown}]}


class SlackListeners:
    """The app's listeners. ``identity`` is read at each event (it is known once ``auth.test`` answered)."""

    def __init__(self, *, gateway: Gateway, client: AsyncWebClient, identity: Callable[[], BotIdentity]) -> None:
        self._gateway = gateway
        self._client = client
        self._identity = identity
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_event(self, body: dict[str, Any], ack: AsyncAck) -> BoltResponse | None:
        """``app_mention`` and ``message``: accept what is a person talking to us, then ack."""
        options = self._gateway.config.slack
        candidate = translate(body, me=self._identity(), answer_bots=options.answer_bots)
        if candidate is not None:
            try:
                await self._intake(candidate)
            except StoreUnavailable as exc:
                log.error("intake failed; not acknowledging so Slack retries", extra={
                    "event": "slack_intake_failed", "error": str(exc), "event_id": body.get("event_id")})
                return BoltResponse(status=503, body="")
        await ack()
        return None

    async def _intake(self, candidate: Candidate) -> None:
        message = candidate.message
        if candidate.needs_existing_conversation and not await self._gateway.has_conversation(message.conversation):
            return
        try:
            await self._gateway.accept(message)
        except MessageRejected as exc:
            if not exc.silent:
                self._spawn(self._tell(message, exc.user_message))

    async def on_command(self, body: dict[str, Any], ack: AsyncAck) -> None:
        """``/assistant show|list|reset|use|help``, answered ephemerally in the ack."""
        place, conversation = command_place(body)

        async def is_admin() -> bool:
            return await self._is_admin(place.user)

        context = CommandContext(place=place, conversation=conversation, is_admin=is_admin)
        try:
            answer = await assistant_command(self._gateway, str(body.get("text") or ""), context)
        except SwitchboardError as exc:
            reference = new_reference()
            log.warning("command failed", extra={"event": "slack_command_failed", "reference": reference,
                                                 "error": type(exc).__name__})
            answer = f"{exc.user_message} (reference `{reference}`)"
        await ack(**ephemeral(answer))

    async def on_error(self, error: Exception, body: dict[str, Any]) -> BoltResponse:
        """Bolt's one catch-all: log with a reference; commands get it ephemerally, events a 500 (retry)."""
        reference = new_reference()
        log.error("slack listener failed", exc_info=error, extra={
            "event": "slack_listener_failed", "reference": reference, "error": type(error).__name__})
        if isinstance(body, dict) and body.get("command"):
            answer = f"{SwitchboardError.user_message} (reference `{reference}`)"
            return BoltResponse(status=200, body=ephemeral(answer))
        return BoltResponse(status=500, body="")

    async def _is_admin(self, user: str) -> bool:
        """An admin is listed in ``slack.admins``, is a workspace admin/owner, or is in one of the user
        groups in ``slack.admin_groups`` — asked of Slack now (``users.info``, ``usergroups.users.list``)."""
        options = self._gateway.config.slack
        if user in options.admins:
            return True
        response = await self._client.users_info(user=user)
        info = response.get("user") or {}
        if info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"):
            return True
        for group in options.admin_groups:
            members = await self._client.usergroups_users_list(usergroup=group)
            if user in (members.get("users") or []):
                return True
        return False

    async def _tell(self, message: InboundMessage, text: str) -> None:
        """Tell the person why their message was refused, where they said it."""
        reply = message.reply_to
        try:
            await self._client.chat_postMessage(channel=reply["channel"], thread_ts=reply.get("thread_ts") or None,
                                                markdown_text=text)
        except SlackApiError as exc:
            log.warning("could not tell the user their message was refused", extra={
                "event": "slack_notice_failed", "error": exc.response.get("error"), "channel": reply["channel"]})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for notices still being sent (at shutdown); cancel those that take longer."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

