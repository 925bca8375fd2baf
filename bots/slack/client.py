"""The Slack Web API clients this process uses, and how their errors are classified.

Every client is built here, so all of them use ``SLACK_API_URL`` (with the trailing ``/`` that
slack-sdk's ``urljoin`` needs), the adapter's one aiohttp session, and retry handlers: slack-sdk
retries nothing on HTTP 429 unless given ``AsyncRateLimitErrorRetryHandler``, which then sleeps for
Slack's ``Retry-After`` (never blocking the loop) and tries again.
"""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from core.settings import Settings

RATE_LIMIT_RETRIES = 4
REQUEST_TIMEOUT_S = 30

# The answer cannot be delivered there, and trying again will not change that.
UNDELIVERABLE = frozenset({
    "not_in_channel", "channel_not_found", "is_archived", "restricted_action", "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel", "restricted_action_non_threadable_channel", "cannot_reply_to_message",
    "team_access_not_granted", "thread_not_found", "message_not_found", "no_permission", "ekm_access_denied",
})
# Slack could not do it now; the same call later may work.
TRANSIENT = frozenset({
    "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
})
# The stream is over (Slack ends streams after ~5 minutes; a person may press stop).
STREAM_OVER = frozenset({"message_not_in_streaming_state", "stopped_by_user", "streaming_state_conflict"})


def web_client(settings: Settings, session: aiohttp.ClientSession, *, with_token: bool = True) -> AsyncWebClient:
    """A Web API client on ``SLACK_API_URL`` sharing ``session``; ``with_token=False`` gives Bolt's template."""
    token = settings.slack_bot_token.get_secret_value() if with_token and settings.slack_bot_token else None
    return AsyncWebClient(
        token=token,
        base_url=settings.slack_api_base(),
        session=session,
        timeout=REQUEST_TIMEOUT_S,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )


def error_code(exc: SlackApiError) -> str:
    """Slack's error code (``not_in_channel``, ``ratelimited``, …) of a failed call."""
    response = exc.response
    code = response.get("error") if response is not None else None
    return str(code or "unknown_error")
