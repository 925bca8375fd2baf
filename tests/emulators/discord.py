"""A local Discord: REST (API v10) and the gateway WebSocket on 127.0.0.1, for the unmodified discord.py client.

Point discord.py at it with ``discord.http.Route.BASE = emulator.rest_base`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(emulator.gateway_url)``; ``GET /gateway/bot``
answers with the same WebSocket URL. Frames are plain JSON text (no zlib/zstd, whatever ``compress`` asks).

What a test can do:

- drive the world: ``slash(...)`` pushes an ``INTERACTION_CREATE`` for an application command,
  ``user_message(...)`` a ``MESSAGE_CREATE``; ``add_text_channel``/``add_thread``/``dm_channel`` shape it;
- observe it: ``calls`` is every REST call in order (method, path, JSON body, status), ``messages`` every
  message by id with its content history, ``interactions`` every interaction with its acknowledgement time;
  ``GET /channels/<id>/messages`` (``after``/``before``/``limit``) lists a channel as Discord does;
- break it: ``inject(...)`` answers matching calls with an error (429 with Discord's body and ``Via``
  header, ``10062`` unknown interaction, ``50013`` missing permissions, ``10003`` unknown channel...),
  ``drop_connections()`` closes the gateway so the client RESUMEs.

Discord's behaviour kept on purpose: JSON answers carry exactly ``Content-Type: application/json``
(discord.py compares it verbatim); an interaction must be answered within ``ack_deadline_s`` and once;
its token is valid ``token_ttl_s``; without the message content intent, guild messages that do not
mention the bot arrive with empty ``content``; the bot's own messages come back as ``MESSAGE_CREATE``;
a create with ``enforce_nonce`` and a ``nonce`` the same author used within ``nonce_window_s`` is answered
with that earlier message and creates none (404 Unknown Message if it was deleted: ``del messages[id]``),
``expire_nonces()`` lets that window pass; interaction responses carry ``interaction_metadata`` (follow-ups
with ``original_response_message_id``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1_420_070_400_000
MESSAGE_CONTENT_INTENT = 1 << 15
GATEWAY_MESSAGE_CONTENT_FLAG = 1 << 18  # application flag: the intent is enabled in the developer portal
EPHEMERAL = 1 << 6
LOADING = 1 << 7
ALL_PERMISSIONS = (1 << 50) - 1
API = "/api/v10"

Json = dict[str, Any]


@dataclass
class RestCall:
    """One REST request as the emulator saw it (``status`` is what it answered)."""

    method: str
    path: str
    json: Any
    status: int
    query: dict[str, str]
    at: float

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


@dataclass
class EmuMessage:
    id: str
    channel_id: str
    author_id: str
    content: str
    kind: str  # "user" | "channel" | "original" | "followup"
    history: list[str] = field(default_factory=list)
    reference_id: str | None = None
    flags: int = 0
    interaction_id: str | None = None


@dataclass
class EmuInteraction:
    id: str
    token: str
    name: str
    channel_id: str
    guild_id: str | None
    user_id: str
    dispatched_at: float
    acked_at: float | None = None
    ack_type: int | None = None
    original_id: str | None = None
    choices: list[Json] | None = None
    """What an autocomplete interaction was answered with (callback type 8)."""


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    code: int
    message: str
    times: int
    retry_after_s: float = 0.0


@dataclass
class _Session:
    ws: web.WebSocketResponse
    session_id: str = ""
    seq: int = 0
    shard: tuple[int, int] = (0, 1)
    intents: int = 0
    identified: bool = False


def _iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).isoformat()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Not web.json_response: it appends "; charset=utf-8", and discord.py then treats the body as text.
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json",
                        headers=headers)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status=status)


class DiscordEmulator:
    """REST + gateway of one Discord application with one bot user, a guild and a text channel."""

    def __init__(self, *, token: str = "emulator-bot-token", shard_count: int = 1,
                 message_content_allowed: bool = True, ack_deadline_s: float = 3.0,
                 token_ttl_s: float = 900.0, heartbeat_interval_ms: int = 41_250,
                 nonce_window_s: float = 300.0) -> None:
        self.token = token
        self.shard_count = shard_count
        self.message_content_allowed = message_content_allowed
        self.ack_deadline_s = ack_deadline_s
        self.token_ttl_s = token_ttl_s
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.nonce_window_s = nonce_window_s
        self._nonces: dict[tuple[str, str], tuple[str, float]] = {}  # (author, nonce) -> (message id, when)
        self._ids = itertools.count(1)
        self.app_id = self.new_id()
        self.bot = self._user_payload(self.app_id, "switchboard", bot=True)
        self.users: dict[str, Json] = {}
        self.guilds: dict[str, Json] = {}
        self.channels: dict[str, Json] = {}
        self.messages: dict[str, EmuMessage] = {}
        self.interactions: dict[str, EmuInteraction] = {}
        self.commands: dict[str | None, list[Json]] = {}
        self.calls: list[RestCall] = []
        self.identifies: list[Json] = []
        self.resumes: list[Json] = []
        self.faults: list[Fault] = []
        self._sessions: list[_Session] = []
        self._dead_sessions: dict[str, _Session] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.guild_id = self.add_guild("Emulated guild")
        self.channel_id = self.add_text_channel(self.guild_id, "general")
        self.user_id = self.add_user("alice")

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for session in list(self._sessions):
            await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def rest_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # --- the world ----------------------------------------------------------------------------

    def new_id(self, *, shard: int | None = None) -> str:
        """A snowflake for now, unique within the emulator; as a guild ID, one that ``shard`` serves."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        if shard is not None:
            ms -= (ms - shard) % self.shard_count
        return str((ms << 22) | (next(self._ids) & 0x3FFFFF))

    @staticmethod
    def _user_payload(user_id: str, name: str, *, bot: bool = False) -> Json:
        return {"id": user_id, "username": name, "global_name": name, "discriminator": "0", "avatar": None,
                "bot": bot, "system": False, "public_flags": 0, "flags": 0, "verified": True,
                "mfa_enabled": False}

    def add_user(self, name: str) -> str:
        user_id = self.new_id()
        self.users[user_id] = self._user_payload(user_id, name)
        return user_id

    def add_guild(self, name: str, *, shard: int | None = None) -> str:
        """A guild the bot is in, served by ``shard`` when given (Discord: ``(guild_id >> 22) % shard_count``)."""
        guild_id = self.new_id(shard=shard)
        everyone = {"id": guild_id, "name": "@everyone", "permissions": str(ALL_PERMISSIONS), "position": 0,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        self.guilds[guild_id] = {
            "id": guild_id, "name": name, "icon": None, "splash": None, "discovery_splash": None,
            "owner_id": self.new_id(), "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "roles": [everyone], "emojis": [],
            "stickers": [], "features": [], "mfa_level": 0, "application_id": None, "system_channel_id": None,
            "system_channel_flags": 0, "rules_channel_id": None, "max_members": 500_000, "vanity_url_code": None,
            "description": None, "banner": None, "premium_tier": 0, "premium_subscription_count": 0,
            "preferred_locale": "en-US", "public_updates_channel_id": None, "nsfw_level": 0,
            "premium_progress_bar_enabled": False, "safety_alerts_channel_id": None,
            "large": False, "member_count": 2, "joined_at": _iso(), "unavailable": False,
            "voice_states": [], "presences": [], "stage_instances": [], "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
        return guild_id

    def add_text_channel(self, guild_id: str, name: str) -> str:
        channel_id = self.new_id()
        self.channels[channel_id] = {
            "id": channel_id, "type": 0, "guild_id": guild_id, "name": name, "position": len(self.channels),
            "permission_overwrites": [], "topic": None, "nsfw": False, "last_message_id": None,
            "rate_limit_per_user": 0, "parent_id": None, "default_auto_archive_duration": 1440, "flags": 0,
        }
        return channel_id

    def add_thread(self, parent_id: str, name: str, *, owner_id: str | None = None) -> str:
        """A public thread that someone (a user by default) opened: it exists before the bot starts."""
        return self._new_thread(parent_id, name, owner_id or self.user_id)["id"]

    def dm_channel(self, user_id: str) -> str:
        """The DM channel between the bot and ``user_id`` (created on first use)."""
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user_id:
                return str(channel["id"])
        channel_id = self.new_id()
        self.channels[channel_id] = {"id": channel_id, "type": 1, "last_message_id": None, "flags": 0,
                                     "recipients": [self.users[user_id]]}
        return channel_id

    def _new_thread(self, parent_id: str, name: str, owner_id: str, *, thread_id: str | None = None) -> Json:
        parent = self.channels[parent_id]
        thread_id = thread_id or self.new_id()
        thread = {
            "id": thread_id, "type": 11, "guild_id": parent["guild_id"], "parent_id": parent_id, "name": name,
            "owner_id": owner_id, "last_message_id": None, "rate_limit_per_user": 0, "message_count": 0,
            "member_count": 1, "total_message_sent": 0, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": _iso(),
                                "locked": False, "invitable": True, "create_timestamp": _iso()},
        }
        self.channels[thread_id] = thread
        return thread

    def _guild_payload(self, guild_id: str) -> Json:
        guild = dict(self.guilds[guild_id])
        chans = [c for c in self.channels.values() if c.get("guild_id") == guild_id]
        guild["channels"] = [{k: v for k, v in c.items() if k != "guild_id"} for c in chans if c["type"] != 11]
        guild["threads"] = [c for c in chans if c["type"] == 11]
        guild["members"] = [self._member_payload(self.app_id)]
        return guild

    def _member_payload(self, user_id: str, *, permissions: int | None = None) -> Json:
        user = self.bot if user_id == self.app_id else self.users[user_id]
        member: Json = {"user": user, "nick": None, "avatar": None, "roles": [], "joined_at": _iso(),
                        "premium_since": None, "deaf": False, "mute": False, "pending": False, "flags": 0,
                        "communication_disabled_until": None}
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member

    # --- driving the bot ----------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever the emulator's state changes."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def connected_shards(self) -> int:
        """Gateway sessions that identified (or resumed) and are still open."""
        return sum(s.identified for s in self._sessions)

    async def wait_ready(self, *, shards: int | None = None, timeout_s: float = 10.0) -> None:
        """``shards`` (default: every shard) identified or resumed, and got their READY and GUILD_CREATEs."""
        wanted = self.shard_count if shards is None else shards
        await self.wait_until(lambda: self.connected_shards() >= wanted, timeout_s)

    async def slash(self, name: str, options: list[Json] | None = None, *, channel_id: str | None = None,
                    user_id: str | None = None, permissions: int = 0, app_permissions: int = ALL_PERMISSIONS,
                    subcommand: str | None = None, deliver: bool = True, kind: int = 2) -> EmuInteraction:
        """Someone runs ``/name [subcommand] options`` in ``channel_id`` (default: the text channel).

        ``deliver=False`` only creates the interaction (for tests that drive REST without a gateway).
        ``kind=4`` is an autocomplete request instead (mark the option being typed ``"focused": True``).
        """
        channel_id = channel_id or self.channel_id
        user_id = user_id or self.user_id
        channel = self.channels[channel_id]
        guild_id = channel.get("guild_id")
        opts = options or []
        if subcommand is not None:
            opts = [{"name": subcommand, "type": 1, "options": opts}]
        interaction = EmuInteraction(id=self.new_id(), token="tok_" + secrets.token_urlsafe(24), name=name,
                                     channel_id=channel_id, guild_id=guild_id, user_id=user_id,
                                     dispatched_at=time.monotonic())
        payload: Json = {
            "id": interaction.id, "application_id": self.app_id, "type": kind, "token": interaction.token,
            "version": 1, "locale": "en-US", "app_permissions": str(app_permissions), "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id or "0"}, "attachment_size_limit": 10 * 1024 * 1024,
            "channel_id": channel_id, "channel": self._interaction_channel(channel),
            "data": {"id": self._command_id(name, guild_id), "name": name, "type": 1, "options": opts},
            "context": 1 if channel["type"] == 1 else 0,
        }
        if guild_id is not None:
            payload["guild_id"] = guild_id
            payload["guild_locale"] = "en-US"
            payload["guild"] = {"id": guild_id, "locale": "en-US", "features": []}
            payload["member"] = self._member_payload(user_id, permissions=permissions)
        else:
            payload["user"] = self.users[user_id]
        self.interactions[interaction.id] = interaction
        if deliver:
            await self.dispatch("INTERACTION_CREATE", payload, guild_id=guild_id)
        return interaction

    def _interaction_channel(self, channel: Json) -> Json:
        partial = {k: v for k, v in channel.items() if k != "recipients"}
        partial["permissions"] = str(ALL_PERMISSIONS)
        if channel["type"] == 1:
            partial["recipients"] = channel["recipients"]
        return partial

    def _command_id(self, name: str, guild_id: str | None) -> str:
        for scope in (guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name:
                    return str(command["id"])
        return self.new_id()

    async def user_message(self, content: str, *, channel_id: str | None = None, user_id: str | None = None,
                           mention_bot: bool = False, deliver: bool = True) -> str:
        """A person says ``content`` (prefixed with the bot's mention when ``mention_bot``); returns its ID."""
        channel_id = channel_id or self.channel_id
        user_id = user_id or self.user_id
        if mention_bot:
            content = f"<@{self.app_id}> {content}"
        message = self._store_message(channel_id, user_id, content, kind="user")
        if deliver:
            await self.dispatch("MESSAGE_CREATE", self._message_payload(message, created=True),
                                guild_id=self.channels[channel_id].get("guild_id"))
        return message.id

    async def dispatch(self, event: str, data: Json, *, guild_id: str | None = None, required: bool = True) -> None:
        """Send a DISPATCH to the shard that owns ``guild_id`` (shard 0 for DMs)."""
        shard_id = (int(guild_id) >> 22) % self.shard_count if guild_id else 0
        sessions = [s for s in self._sessions if s.identified and s.shard[0] == shard_id]
        if not sessions and required:
            raise AssertionError(f"no gateway session for shard {shard_id}: is the client connected?")
        for session in sessions:
            await self._send_dispatch(session, event, self._for_session(session, event, data))

    def _for_session(self, session: _Session, event: str, data: Json) -> Json:
        if event != "MESSAGE_CREATE" or session.intents & MESSAGE_CONTENT_INTENT:
            return data
        mentioned = any(u["id"] == self.app_id for u in data.get("mentions", []))
        if data.get("guild_id") is None or mentioned or data["author"]["id"] == self.app_id:
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway connection with ``code``: the client reconnects and RESUMEs."""
        for session in list(self._sessions):
            self._dead_sessions[session.session_id] = session
            await session.ws.close(code=code)

    # --- faults -------------------------------------------------------------------------------

    def inject(self, method: str, path: str, *, status: int, code: int = 0, message: str = "error",
               times: int = 1, retry_after_s: float = 0.0) -> Fault:
        """Answer the next ``times`` calls matching ``method`` and the ``path`` regex (after /api/v10)."""
        fault = Fault(method=method.upper(), path=re.compile(path), status=status, code=code, message=message,
                      times=times, retry_after_s=retry_after_s)
        self.faults.append(fault)
        return fault

    def rate_limit(self, method: str, path: str, *, times: int = 1, retry_after_s: float = 0.05) -> Fault:
        return self.inject(method, path, status=429, times=times, retry_after_s=retry_after_s,
                           message="You are being rate limited.")

    def rate_limit_edits(self, *, times: int = 2, retry_after_s: float = 0.05) -> Fault:
        return self.rate_limit("PATCH", r"^/(channels/\d+|webhooks/\d+/[^/]+)/messages/", times=times,
                               retry_after_s=retry_after_s)

    def unknown_interaction(self, *, times: int = 1) -> Fault:
        return self.inject("POST", r"^/interactions/\d+/[^/]+/callback$", status=404, code=10062,
                           message="Unknown interaction", times=times)

    def missing_permissions(self, method: str, path: str, *, times: int = 1) -> Fault:
        return self.inject(method, path, status=403, code=50013, message="Missing Permissions", times=times)

    def unknown_channel(self, channel_id: str, *, times: int = 1_000) -> Fault:
        return self.inject("*", rf"^/channels/{channel_id}(/|$)", status=404, code=10003,
                           message="Unknown Channel", times=times)

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method in ("*", method) and fault.path.search(path):
                fault.times -= 1
                return fault
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        if fault.status == 429:
            return _json({"message": fault.message, "retry_after": fault.retry_after_s, "global": False},
                         status=429, headers={"Via": "1.1 google", "Retry-After": str(fault.retry_after_s),
                                              "X-RateLimit-Scope": "user"})
        return _error(fault.status, fault.code, fault.message)

    # --- observing ----------------------------------------------------------------------------

    def bot_messages(self, channel_id: str) -> list[EmuMessage]:
        """The bot's messages in ``channel_id`` (interaction responses included), oldest first."""
        return [m for m in self.messages.values() if m.channel_id == channel_id and m.author_id == self.app_id]

    def calls_to(self, method: str, pattern: str) -> list[RestCall]:
        regex = re.compile(pattern)
        return [c for c in self.calls if c.method == method and regex.search(c.path)]

    def threads(self, parent_id: str | None = None) -> list[Json]:
        parent_id = parent_id or self.channel_id
        return [c for c in self.channels.values() if c["type"] == 11 and c["parent_id"] == parent_id]

    # --- gateway ------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        session = _Session(ws=ws)
        self._sessions.append(session)
        try:
            await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                                          "s": None, "t": None}))
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    break
                await self._on_frame(session, json.loads(frame.data))
        finally:
            self._sessions.remove(session)
            await self._notify()
        return ws

    async def _on_frame(self, session: _Session, frame: Json) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:
            await session.ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
        elif op == 2:
            await self._identify(session, data)
        elif op == 6:
            await self._resume(session, data)

    async def _identify(self, session: _Session, data: Json) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & MESSAGE_CONTENT_INTENT and not self.message_content_allowed:
            await session.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard") or [0, 1]
        session.shard, session.intents = (int(shard[0]), int(shard[1])), intents
        session.session_id = secrets.token_hex(16)
        mine = [g for g in self.guilds if (int(g) >> 22) % session.shard[1] == session.shard[0]]
        ready = {"v": 10, "user": self.bot, "guilds": [{"id": g, "unavailable": True} for g in mine],
                 "session_id": session.session_id, "resume_gateway_url": self.gateway_url,
                 "shard": list(session.shard), "application": {"id": self.app_id, "flags": self._app_flags()},
                 "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [],
                 "geo_ordered_rtc_regions": [], "auth": {}, "user_settings": {}, "session_type": "normal"}
        await self._send_dispatch(session, "READY", ready)
        for guild_id in mine:
            await self._send_dispatch(session, "GUILD_CREATE", self._guild_payload(guild_id))
        session.identified = True
        await self._notify()

    async def _resume(self, session: _Session, data: Json) -> None:
        self.resumes.append(data)
        old = self._dead_sessions.pop(str(data.get("session_id")), None)
        if old is None or data.get("token") != self.token:
            await session.ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return
        session.session_id, session.shard, session.intents = old.session_id, old.shard, old.intents
        session.seq = old.seq
        await self._send_dispatch(session, "RESUMED", {})
        session.identified = True
        await self._notify()

    async def _send_dispatch(self, session: _Session, event: str, data: Json) -> None:
        session.seq += 1
        await session.ws.send_str(json.dumps({"op": 0, "t": event, "s": session.seq, "d": data}))

    # --- REST ---------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw and request.content_type == "application/json" else None
        response = await self._answer(request, path, body)
        self.calls.append(RestCall(method=request.method, path=path, json=body, status=response.status,
                                   query=dict(request.query), at=time.monotonic()))
        await self._notify()
        return response

    async def _answer(self, request: web.Request, path: str, body: Any) -> web.Response:
        fault = self._fault_for(request.method, path)
        if fault is not None:
            return self._fault_response(fault)
        for method, pattern, needs_auth, handler in self._routes():
            match = pattern.fullmatch(path)
            if match is None or method != request.method:
                continue
            if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                return _error(401, 0, "401: Unauthorized")
            return await handler(request, body, *match.groups())
        return _error(404, 0, f"404: Not Found ({request.method} {path})")

    def _routes(self) -> list[tuple[str, re.Pattern[str], bool, Callable[..., Awaitable[web.Response]]]]:
        hook = r"/webhooks/(\d+)/([^/]+)"
        table: list[tuple[str, str, bool, Callable[..., Awaitable[web.Response]]]] = [
            ("GET", r"/users/@me", True, self._get_me),
            ("GET", r"/oauth2/applications/@me", True, self._get_application),
            ("GET", r"/gateway/bot", True, self._get_gateway_bot),
            ("GET", r"/gateway", False, self._get_gateway_bot),
            ("PUT", r"/applications/(\d+)/commands", True, self._put_commands),
            ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", True, self._put_commands),
            ("GET", r"/applications/(\d+)/commands", True, self._get_commands),
            ("GET", r"/applications/(\d+)/guilds/(\d+)/commands", True, self._get_commands),
            ("POST", r"/interactions/(\d+)/([^/]+)/callback", False, self._callback),
            ("PATCH", hook + r"/messages/@original", False, self._edit_original),
            ("GET", hook + r"/messages/@original", False, self._get_original),
            ("POST", hook, False, self._followup),
            ("PATCH", hook + r"/messages/(\d+)", False, self._edit_followup),
            ("GET", r"/channels/(\d+)", True, self._get_channel),
            ("POST", r"/channels/(\d+)/messages", True, self._create_message),
            ("GET", r"/channels/(\d+)/messages", True, self._list_messages),
            ("PATCH", r"/channels/(\d+)/messages/(\d+)", True, self._edit_message),
            ("GET", r"/channels/(\d+)/messages/(\d+)", True, self._get_message),
            ("POST", r"/channels/(\d+)/typing", True, self._typing),
            ("POST", r"/channels/(\d+)/messages/(\d+)/threads", True, self._thread_from_message),
            ("POST", r"/channels/(\d+)/threads", True, self._thread_standalone),
            ("PUT", r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", True, self._react),
            ("DELETE", r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", True, self._react),
        ]
        return [(m, re.compile(p), auth, h) for m, p, auth, h in table]

    async def _get_me(self, _request: web.Request, _body: Any) -> web.Response:
        return _json(self.bot)

    async def _get_application(self, _request: web.Request, _body: Any) -> web.Response:
        owner = self._user_payload(self.new_id(), "owner")
        return _json({"id": self.app_id, "name": "Switchboard", "icon": None, "description": "", "summary": "",
                      "bot_public": True, "bot_require_code_grant": False, "owner": owner, "verify_key": "0" * 64,
                      "flags": self._app_flags(), "team": None, "bot": self.bot, "rpc_origins": [], "redirect_uris": [],
                      "interactions_endpoint_url": None, "tags": []})

    def _app_flags(self) -> int:
        return GATEWAY_MESSAGE_CONTENT_FLAG if self.message_content_allowed else 0

    async def _get_gateway_bot(self, _request: web.Request, _body: Any) -> web.Response:
        return _json({"url": self.gateway_url, "shards": self.shard_count,
                      "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                              "max_concurrency": 1}})

    async def _put_commands(self, _request: web.Request, body: Any, app_id: str,
                            guild_id: str | None = None) -> web.Response:
        if app_id != self.app_id:
            return _error(403, 50001, "Missing Access")
        stored = [{**command, "id": self._command_id(command["name"], guild_id), "application_id": self.app_id,
                   "version": self.new_id(), "guild_id": guild_id} for command in body]
        if guild_id is None:
            for command in stored:
                command.pop("guild_id")
        self.commands[guild_id] = stored
        return _json(stored)

    async def _get_commands(self, _request: web.Request, _body: Any, _app_id: str,
                            guild_id: str | None = None) -> web.Response:
        return _json(self.commands.get(guild_id, []))

    # interactions

    def _interaction(self, token: str) -> EmuInteraction | None:
        return next((i for i in self.interactions.values() if i.token == token), None)

    def _token_error(self, app_id: str, token: str) -> web.Response | None:
        interaction = self._interaction(token)
        if app_id != self.app_id or interaction is None:
            return _error(401, 50027, "Invalid Webhook Token")
        if time.monotonic() - interaction.dispatched_at > self.token_ttl_s:
            return _error(401, 50027, "Invalid Webhook Token")
        if interaction.acked_at is None:
            return _error(404, 10015, "Unknown Webhook")
        return None

    async def _callback(self, _request: web.Request, body: Any, interaction_id: str, token: str) -> web.Response:
        interaction = self.interactions.get(interaction_id)
        if interaction is None or interaction.token != token:
            return _error(404, 10062, "Unknown interaction")
        if interaction.acked_at is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - interaction.dispatched_at > self.ack_deadline_s:
            return _error(404, 10062, "Unknown interaction")
        interaction.acked_at, interaction.ack_type = time.monotonic(), int(body["type"])
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        if interaction.ack_type == 8:
            interaction.choices = list(data.get("choices") or [])
            return _json({"interaction": {"id": interaction.id, "type": 4}})
        if interaction.ack_type == 5:
            message = self._store_message(interaction.channel_id, self.app_id, "", kind="original",
                                          flags=(flags & EPHEMERAL) | LOADING, interaction_id=interaction.id)
        elif interaction.ack_type == 4:
            message = self._store_message(interaction.channel_id, self.app_id, data.get("content", ""),
                                          kind="original", flags=flags & EPHEMERAL, interaction_id=interaction.id)
        else:
            return _error(400, 50035, "Invalid Form Body (unsupported callback type)")
        interaction.original_id = message.id
        return _json({"interaction": {"id": interaction.id, "type": 2, "response_message_id": message.id,
                                      "response_message_loading": interaction.ack_type == 5,
                                      "response_message_ephemeral": bool(message.flags & EPHEMERAL)},
                      "resource": {"type": interaction.ack_type, "message": self._message_payload(message)}})

    async def _edit_original(self, _request: web.Request, body: Any, app_id: str, token: str) -> web.Response:
        error = self._token_error(app_id, token)
        if error is not None:
            return error
        interaction = self._interaction(token)
        assert interaction is not None and interaction.original_id is not None
        message = self.messages[interaction.original_id]
        self._edit(message, body)
        message.flags &= ~LOADING
        return _json(self._message_payload(message))

    async def _get_original(self, _request: web.Request, _body: Any, app_id: str, token: str) -> web.Response:
        error = self._token_error(app_id, token)
        if error is not None:
            return error
        interaction = self._interaction(token)
        assert interaction is not None and interaction.original_id is not None
        return _json(self._message_payload(self.messages[interaction.original_id]))

    async def _followup(self, _request: web.Request, body: Any, app_id: str, token: str) -> web.Response:
        error = self._token_error(app_id, token)
        if error is not None:
            return error
        interaction = self._interaction(token)
        assert interaction is not None
        message = self._store_message(interaction.channel_id, self.app_id, body.get("content", ""),
                                      kind="followup", flags=int(body.get("flags") or 0) & EPHEMERAL,
                                      interaction_id=interaction.id)
        await self._echo(message)
        return _json(self._message_payload(message))

    async def _edit_followup(self, _request: web.Request, body: Any, app_id: str, token: str,
                             message_id: str) -> web.Response:
        error = self._token_error(app_id, token)
        if error is not None:
            return error
        interaction = self._interaction(token)
        message = self.messages.get(message_id)
        if message is None or interaction is None or message.interaction_id != interaction.id:
            return _error(404, 10008, "Unknown Message")
        self._edit(message, body)
        return _json(self._message_payload(message))

    # channels and messages

    def _channel_or_error(self, channel_id: str) -> Json | web.Response:
        channel = self.channels.get(channel_id)
        return _error(404, 10003, "Unknown Channel") if channel is None else channel

    async def _get_channel(self, _request: web.Request, _body: Any, channel_id: str) -> web.Response:
        channel = self._channel_or_error(channel_id)
        return channel if isinstance(channel, web.Response) else _json(channel)

    async def _create_message(self, _request: web.Request, body: Any, channel_id: str) -> web.Response:
        channel = self._channel_or_error(channel_id)
        if isinstance(channel, web.Response):
            return channel
        nonce = None if body.get("nonce") is None else str(body["nonce"])
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self._nonce_used(self.app_id, nonce)
            if earlier is not None:
                return earlier
        reference = (body.get("message_reference") or {}).get("message_id")
        message = self._store_message(channel_id, self.app_id, body.get("content", ""), kind="channel",
                                      reference_id=str(reference) if reference else None)
        payload = self._message_payload(message)
        if nonce is not None:
            self._nonces[(self.app_id, nonce)] = (message.id, time.monotonic())
            payload["nonce"] = nonce
        await self._echo(message)
        return _json(payload)

    def _nonce_used(self, author_id: str, nonce: str) -> web.Response | None:
        """Discord's ``enforce_nonce``: the message this author made with ``nonce`` in the past few minutes."""
        seen = self._nonces.get((author_id, nonce))
        if seen is None or time.monotonic() - seen[1] > self.nonce_window_s:
            return None
        message = self.messages.get(seen[0])
        if message is None:
            return _error(404, 10008, "Unknown Message")  # deleted since: Discord does not make it again
        return _json({**self._message_payload(message), "nonce": nonce})

    def expire_nonces(self) -> None:
        """Let Discord's nonce window pass: every nonce used so far may make a new message again."""
        self._nonces.clear()

    async def _list_messages(self, request: web.Request, _body: Any, channel_id: str) -> web.Response:
        """Up to ``limit`` messages, newest first: the oldest ones after ``after``, the newest before ``before``."""
        channel = self._channel_or_error(channel_id)
        if isinstance(channel, web.Response):
            return channel
        query = request.query
        limit = int(query.get("limit", "50"))
        if not 1 <= limit <= 100 or "around" in query:
            return _error(400, 50035, "Invalid Form Body (limit 1-100; around is not emulated)")
        found = sorted((m for m in self.messages.values() if m.channel_id == channel_id), key=lambda m: int(m.id))
        if "after" in query:
            found = [m for m in found if int(m.id) > int(query["after"])][:limit]
        else:
            before = int(query.get("before", str(1 << 64)))
            found = [m for m in found if int(m.id) < before][-limit:]
        return _json([self._message_payload(m) for m in reversed(found)])

    async def _edit_message(self, _request: web.Request, body: Any, channel_id: str,
                            message_id: str) -> web.Response:
        message = self.messages.get(message_id)
        if message is None or message.channel_id != channel_id:
            return _error(404, 10008, "Unknown Message")
        if message.author_id != self.app_id:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        self._edit(message, body)
        return _json(self._message_payload(message))

    async def _get_message(self, _request: web.Request, _body: Any, channel_id: str,
                           message_id: str) -> web.Response:
        message = self.messages.get(message_id)
        if message is None or message.channel_id != channel_id:
            return _error(404, 10008, "Unknown Message")
        return _json(self._message_payload(message))

    async def _typing(self, _request: web.Request, _body: Any, channel_id: str) -> web.Response:
        channel = self._channel_or_error(channel_id)
        return channel if isinstance(channel, web.Response) else web.Response(status=204)

    async def _react(self, _request: web.Request, _body: Any, _channel_id: str, message_id: str,
                     _emoji: str) -> web.Response:
        if message_id not in self.messages:
            return _error(404, 10008, "Unknown Message")
        return web.Response(status=204)

    async def _thread_from_message(self, _request: web.Request, body: Any, channel_id: str,
                                   message_id: str) -> web.Response:
        channel = self._channel_or_error(channel_id)
        if isinstance(channel, web.Response):
            return channel
        if channel["type"] not in (0, 5) or message_id not in self.messages:
            return _error(400, 50024, "Cannot execute action on this channel type")
        thread = self._new_thread(channel_id, body["name"][:100], self.app_id, thread_id=message_id)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True}, guild_id=channel["guild_id"])
        return _json(thread, status=201)

    async def _thread_standalone(self, _request: web.Request, body: Any, channel_id: str) -> web.Response:
        channel = self._channel_or_error(channel_id)
        if isinstance(channel, web.Response):
            return channel
        if channel["type"] not in (0, 5):
            return _error(400, 50024, "Cannot execute action on this channel type")
        thread = self._new_thread(channel_id, body["name"][:100], self.app_id)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True}, guild_id=channel["guild_id"])
        return _json(thread, status=201)

    def _store_message(self, channel_id: str, author_id: str, content: str, *, kind: str, flags: int = 0,
                       reference_id: str | None = None, interaction_id: str | None = None) -> EmuMessage:
        message = EmuMessage(id=self.new_id(), channel_id=channel_id, author_id=author_id, content=content,
                             kind=kind, history=[content], reference_id=reference_id, flags=flags,
                             interaction_id=interaction_id)
        self.messages[message.id] = message
        return message

    @staticmethod
    def _edit(message: EmuMessage, body: Any) -> None:
        if isinstance(body, dict) and "content" in body and body["content"] is not None:
            message.content = body["content"]
            message.history.append(message.content)

    def _interaction_metadata(self, message: EmuMessage) -> Json:
        interaction = self.interactions[message.interaction_id or ""]
        meta: Json = {"id": interaction.id, "type": 2, "user": self.users[interaction.user_id],
                      "authorizing_integration_owners": {"0": interaction.guild_id or "0"}}
        if message.kind == "followup" and interaction.original_id is not None:
            meta["original_response_message_id"] = interaction.original_id
        return meta

    async def _echo(self, message: EmuMessage) -> None:
        """Discord sends the bot its own messages too."""
        await self.dispatch("MESSAGE_CREATE", self._message_payload(message, created=True),
                            guild_id=self.channels[message.channel_id].get("guild_id"), required=False)

    def _message_payload(self, message: EmuMessage, *, created: bool = False) -> Json:
        channel = self.channels[message.channel_id]
        author = self.bot if message.author_id == self.app_id else self.users[message.author_id]
        mentions = [self.bot] if f"<@{self.app_id}>" in message.content else []
        payload: Json = {
            "id": message.id, "channel_id": message.channel_id, "author": author, "content": message.content,
            "timestamp": _iso(), "edited_timestamp": None if len(message.history) < 2 else _iso(),
            "tts": False, "mention_everyone": False, "mentions": mentions, "mention_roles": [],
            "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": message.flags,
            "components": [],
        }
        if message.interaction_id is not None:
            payload["webhook_id"] = self.app_id
            payload["application_id"] = self.app_id
            payload["interaction_metadata"] = self._interaction_metadata(message)
        if message.reference_id is not None:
            payload["type"] = 19
            payload["message_reference"] = {"message_id": message.reference_id, "channel_id": message.channel_id}
        guild_id = channel.get("guild_id")
        if guild_id is not None and created:
            payload["guild_id"] = guild_id
            if message.author_id != self.app_id:
                payload["member"] = {k: v for k, v in self._member_payload(message.author_id).items() if k != "user"}
        return payload
