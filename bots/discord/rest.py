"""Discord REST calls the adapter makes beyond discord.py's models, and how Discord's errors are read.

Interaction responses are written through the interaction's webhook (``/webhooks/<app>/<token>``),
valid 15 minutes after the interaction. They go through discord.py's ``HTTPClient`` so they share its
rate-limit buckets and its handling of 429 (it waits ``retry_after`` and tries again by itself).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import discord
from discord.http import HTTPClient, Route

# Discord JSON error codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013
INVALID_WEBHOOK_TOKEN = 50027
# The interaction's token cannot be used (any more): answer through the channel instead.
TOKEN_GONE = frozenset({UNKNOWN_WEBHOOK, UNKNOWN_INTERACTION, INVALID_WEBHOOK_TOKEN})
# The place is gone or closed to the bot: trying again will not help.
PLACE_GONE = frozenset({UNKNOWN_CHANNEL, MISSING_ACCESS, MISSING_PERMISSIONS})

# Nobody is pinged by what the assistant writes, whatever it writes ("@everyone" included).
NO_MENTIONS: dict[str, Any] = {"parse": []}
# Transport failures discord.py lets through after its own retries.
NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


def describe(exc: BaseException) -> dict[str, Any]:
    """Log fields for a failed call (status, Discord code), never the request itself (it may hold a token)."""
    if isinstance(exc, discord.HTTPException):
        return {"error": type(exc).__name__, "status": exc.status, "discord_code": exc.code}
    return {"error": type(exc).__name__}


def token_gone(exc: BaseException) -> bool:
    return isinstance(exc, discord.HTTPException) and (exc.code in TOKEN_GONE or exc.status == 401)


def place_gone(exc: BaseException) -> bool:
    return isinstance(exc, discord.HTTPException) and (exc.code in PLACE_GONE or exc.status == 403)


def message_gone(exc: BaseException) -> bool:
    return isinstance(exc, discord.NotFound) and exc.code == UNKNOWN_MESSAGE


class InteractionWebhook:
    """The webhook of one interaction: its deferred response (``@original``) and its follow-ups."""

    def __init__(self, http: HTTPClient, *, application_id: int, token: str) -> None:
        self._http = http
        self._app = application_id
        self._token = token

    def _route(self, method: str, path: str, **params: Any) -> Route:
        return Route(method, "/webhooks/{webhook_id}/{webhook_token}" + path,
                     webhook_id=self._app, webhook_token=self._token, **params)

    async def edit_original(self, content: str) -> int:
        """Replace the deferred response's content; returns its message ID."""
        data = await self._http.request(self._route("PATCH", "/messages/@original"),
                                        json={"content": content, "allowed_mentions": NO_MENTIONS})
        return int(data["id"])

    async def original_id(self) -> int:
        """The deferred response's message ID (its follow-ups name it as ``original_response_message_id``)."""
        data = await self._http.request(self._route("GET", "/messages/@original"))
        return int(data["id"])

    async def send(self, content: str) -> int:
        """Post a follow-up message; returns its ID."""
        data = await self._http.request(self._route("POST", ""),
                                        json={"content": content, "allowed_mentions": NO_MENTIONS})
        return int(data["id"])

    async def edit(self, message_id: int, content: str) -> None:
        await self._http.request(self._route("PATCH", "/messages/{message_id}", message_id=message_id),
                                 json={"content": content, "allowed_mentions": NO_MENTIONS})
