"""The Slack adapter (``core.ports.PlatformAdapter``): a slack-bolt ``AsyncApp`` in HTTP or Socket Mode.

- HTTP mode (``SLACK_SIGNING_SECRET``): ``POST /slack/events`` on the gateway's aiohttp server
  carries events, slash commands and interactivity; Bolt verifies signatures (401 on a bad one).
- Socket Mode (``SLACK_APP_TOKEN``): slack-sdk's aiohttp Socket Mode client, through Bolt's handler.

``start()`` opens the adapter's one aiohttp session, asks ``auth.test`` who the bot is (so no
event waits for it), builds the Bolt app and registers the reply sink factory with core. Every
Slack client uses ``SLACK_API_URL`` and waits out rate limits (``bots.slack.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.client import error_code, web_client
from bots.slack.events import BotIdentity
from bots.slack.listeners import SlackListeners
from bots.slack.sink import SlackSinkFactory
from core.config import Config
from core.errors import ConfigError
from core.gateway import Gateway
from core.metrics import ACK_SECONDS
from core.settings import Settings

log = logging.getLogger(__name__)

COMMAND = "/assistant"
EVENTS_PATH = "/slack/events"
_AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"})


class _TimedSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler, measuring the time from envelope to ack."""

    async def handle(self, client: Any, req: SocketModeRequest) -> None:
        started = time.perf_counter()
        await super().handle(client, req)
        ACK_SECONDS.labels(platform="slack").observe(time.perf_counter() - started)


class SlackAdapter:
    """Slack for ``switchboard run``. Options (``answer_bots``, ``admins``) are read from
    ``gateway.config`` at each event, so a config reload applies; ``config`` is accepted for the
    composition root's uniform signature."""

    name = "slack"

    def __init__(self, *, gateway: Gateway, settings: Settings, config: Config | None = None) -> None:
        problems = []
        if settings.slack_bot_token is None:
            problems.append("SLACK_BOT_TOKEN: not set (it enables Slack)")
        if settings.slack_app_token is None and settings.slack_signing_secret is None:
            problems.append("SLACK_SIGNING_SECRET or SLACK_APP_TOKEN: one is needed (HTTP mode or Socket Mode)")
        if problems:
            raise ConfigError("environment", problems)
        self._gateway = gateway
        self._settings = settings
        self.socket_mode = settings.slack_app_token is not None
        self._session: aiohttp.ClientSession | None = None
        self._app: AsyncApp | None = None
        self._identity: BotIdentity | None = None
        self._authorized: AuthorizeResult | None = None
        self._listeners: SlackListeners | None = None
        self._sinks: SlackSinkFactory | None = None
        self._socket: _TimedSocketModeHandler | None = None
        self._connecting: asyncio.Task[None] | None = None
        self.client: AsyncWebClient | None = None

    # ------------------------------------------------------------------ PlatformAdapter

    def routes(self) -> list[web.RouteDef]:
        return [] if self.socket_mode else [web.post(EVENTS_PATH, self._handle_http)]

    def ready(self) -> bool:
        if self._app is None:
            return False
        if self._socket is None:
            return True
        session = self._socket.client.current_session
        return session is not None and not session.closed and not self._socket.client.closed

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self.client = web_client(self._settings, self._session)
        self._identity = await self._who_am_i(self.client)
        template = web_client(self._settings, self._session, with_token=False)
        self._listeners = SlackListeners(gateway=self._gateway, client=self.client, identity=self.identity)
        self._app = self._build_app(template, self._listeners)
        self._sinks = SlackSinkFactory(self.client, identity=self._identity)
        self._gateway.register_platform("slack", self._sinks)
        if self.socket_mode:
            assert self._settings.slack_app_token is not None
            self._socket = _TimedSocketModeHandler(
                self._app, app_token=self._settings.slack_app_token.get_secret_value(), web_client=template)
            connect = self._socket.connect_async()  # type: ignore[no-untyped-call]  # bolt leaves it unannotated
            self._connecting = asyncio.create_task(connect, name="slack-socket-connect")
        log.info("slack adapter started", extra={"event": "slack_started", "team": self._identity.team_id,
                                                  "mode": "socket" if self.socket_mode else "http"})

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
        if self._listeners is not None:
            await self._listeners.drain()
        if self._sinks is not None:
            await self._sinks.aclose()
        self._app = None
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ internals

    def identity(self) -> BotIdentity:
        assert self._identity is not None, "start() first"
        return self._identity

    async def _who_am_i(self, client: AsyncWebClient) -> BotIdentity:
        try:
            response = await client.auth_test()
        except SlackApiError as exc:
            if error_code(exc) in _AUTH_ERRORS:
                raise ConfigError("environment", [f"SLACK_BOT_TOKEN: Slack refused it ({error_code(exc)})"]) from exc
            raise
        assert self._settings.slack_bot_token is not None
        self._authorized = AuthorizeResult.from_auth_test_response(
            bot_token=self._settings.slack_bot_token.get_secret_value(), auth_test_response=response)
        return BotIdentity(team_id=str(response.get("team_id") or ""), user_id=str(response.get("user_id") or ""),
                           bot_id=response.get("bot_id"))

    def _build_app(self, template: AsyncWebClient, listeners: SlackListeners) -> AsyncApp:
        secret = self._settings.slack_signing_secret
        authorized = self._authorized
        assert authorized is not None

        async def authorize() -> AuthorizeResult:
            # Bolt's hook, answered from start()'s auth.test so no event waits for one. (A plain
            # function: Bolt passes arguments by the names it finds, and `self` is not one of them.)
            return authorized

        app = AsyncApp(
            client=template,
            authorize=authorize,
            signing_secret=secret.get_secret_value() if secret is not None else "",
            request_verification_enabled=not self.socket_mode,
            process_before_response=True,
            raise_error_for_unhandled_request=False,
            logger=logging.getLogger("slack_bolt"),
        )
        app.event("app_mention")(listeners.on_event)
        app.event("message")(listeners.on_event)
        app.command(COMMAND)(listeners.on_command)
        app.error(listeners.on_error)
        return app

    async def _handle_http(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        app = self._app
        if app is None:
            return web.Response(status=503, text="slack adapter not started")
        bolt_response = await app.async_dispatch(await to_bolt_request(request))
        response = await to_aiohttp_response(bolt_response)
        ACK_SECONDS.labels(platform="slack").observe(time.perf_counter() - started)
        return response
