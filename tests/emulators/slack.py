"""A local Slack emulator: the Web API as slack-sdk calls it, signed Events API deliveries, Socket Mode.

``SlackEmulator`` is an aiohttp server on 127.0.0.1 that

- answers ``POST|GET /api/<method>`` the way slack.com does for the methods Switchboard uses
  (form, query or JSON arguments; ``Authorization: Bearer``), records every call in order
  (``calls``) and keeps the messages it holds (``messages``: ts -> text, thread, edits, stream
  state, Slack message ``metadata``) so tests can assert on what a person in the channel would see;
- serves the history as ``conversations.replies`` / ``conversations.history`` do: the bot's messages
  (``user``, ``bot_id``, ``app_id`` as Slack gives them) and the people's messages built with
  ``message_event`` (``said``), ``oldest``/``latest``/``inclusive``, cursor pagination
  (``history_page_size``), and each message's ``metadata`` only with ``include_all_metadata``;
- shows the assistant status of a thread as Slack does (``status_shown``: ``setStatus`` sets it, an
  empty status or the bot's next message in the thread clears it);
- injects Slack's failures on demand: ``rate_limit`` (HTTP 429 + ``Retry-After``), ``fail_next``
  (any ``{"ok": false, "error": ...}``), ``max_text_chars`` (``msg_too_long``), ``not_in_channel``,
  ``refuse_streaming_in`` (streaming refused in a kind of channel), ``stream_ttl_s`` /
  ``expire_stream`` (``message_not_in_streaming_state``), ``set_status_error``;
- builds Events API requests exactly as Slack signs them (``X-Slack-Signature`` v0 HMAC-SHA256
  over ``v0:<timestamp>:<body>``, ``X-Slack-Request-Timestamp``, optional ``X-Slack-Retry-Num`` /
  ``X-Slack-Retry-Reason``) and POSTs them (``deliver``);
- serves Socket Mode: ``apps.connections.open`` (app token) returns a ``ws://`` URL on this
  server; ``socket_deliver`` sends an envelope over it and waits for the app's ack.

Point slack-sdk at it with ``AsyncWebClient(base_url=emu.base_url)``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

Args = dict[str, Any]

DM_PREFIX = "D"
_STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")
_HISTORY_FIELDS = ("type", "ts", "text", "user", "bot_id", "subtype", "thread_ts", "channel", "team")


class SlackError(Exception):
    """An ``{"ok": false}`` answer; ``status`` 429 adds ``Retry-After``."""

    def __init__(self, error: str, *, status: int = 200, retry_after_s: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class Call:
    """One Web API call as the emulator received it, and how it answered."""

    method: str
    args: Args
    token: str | None
    ok: bool = True
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Message:
    """A message the bot posted: its current text, every version of it, and its stream state."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None
    kind: str  # "post" or "stream"
    edits: list[str] = field(default_factory=list)
    streaming: bool = False
    stream_started_at: float = 0.0
    stream_expired: bool = False
    blocks: list[Any] | None = None
    metadata: Any = None
    """Slack message metadata (``{"event_type": …, "event_payload": {…}}``), as last set."""


@dataclass
class Fault:
    method: str
    error: str
    times: int
    retry_after_s: int | None = None


@dataclass
class Delivery:
    """What our app answered to one Events API request, and how long it took."""

    status: int
    body: str
    elapsed_ms: float


@dataclass
class SocketAck:
    envelope_id: str
    payload: Any
    elapsed_ms: float


class SlackEmulator:
    """The Slack Web API, Events API signing and Socket Mode, on loopback. ``start()`` before use."""

    def __init__(
        self, *, team_id: str = "T0TEAM", bot_user_id: str = "U0BOT", bot_id: str = "B0BOT",
        bot_token: str = "xoxb-emulated-bot-token", app_token: str = "xapp-emulated-app-token",
        signing_secret: str = "emulated-signing-secret",
    ) -> None:
        self.team_id, self.bot_user_id, self.bot_id = team_id, bot_user_id, bot_id
        self.app_id = "A0APP"
        self.bot_token, self.app_token, self.signing_secret = bot_token, app_token, signing_secret
        self.calls: list[Call] = []
        self.messages: dict[str, Message] = {}
        self.said: dict[str, Args] = {}  # ts -> a person's (or another bot's) message, from message_event
        self.history_page_size = 1000
        self.reactions: dict[tuple[str, str], list[str]] = {}
        self.statuses: list[tuple[str, str, str]] = []  # every assistant.threads.setStatus, in order
        self.thread_status: dict[tuple[str, str], str] = {}  # what a thread shows now (see status_shown)
        self.ephemerals: list[Args] = []
        self.users: dict[str, Args] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.channels: dict[str, Args] = {}
        # failure switches
        self.max_text_chars = 4000
        self.refuse_streaming_in: set[str] = set()
        self.refuse_streaming_error = "channel_type_not_supported"
        self.stream_ttl_s = 300.0
        self.set_status_error: str | None = None
        self.not_in_channel: set[str] = set()
        self.unknown_channels: set[str] = set()
        self._faults: list[Fault] = []
        self._ts = itertools.count(1)
        self._ts_base = int(time.time())
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._session: aiohttp.ClientSession | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[Any]] = {}
        self.socket_connected = asyncio.Event()
        self.socket_connections = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """The Web API base, with the trailing ``/`` slack-sdk needs."""
        return f"http://127.0.0.1:{self._port}/api/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket", self._handle_socket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self._port = server.sockets[0].getsockname()[1]
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ assertions

    def calls_to(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods]

    def methods(self) -> list[str]:
        """The methods called so far, in order (``auth.test`` and look-ups included)."""
        return [c.method for c in self.calls]

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """The bot's messages in ``channel`` (in the thread ``thread_ts`` if given), oldest first."""
        found = [m for m in self.messages.values()
                 if m.channel == channel and (thread_ts is None or m.thread_ts == thread_ts)]
        return sorted(found, key=lambda m: _ts_key(m.ts))

    def status_shown(self, channel: str, thread_ts: str) -> str:
        """The assistant status a thread shows now: set by ``setStatus``, cleared by ``setStatus("")``
        and, as Slack does, by the bot's next message in the thread."""
        return self.thread_status.get((channel, thread_ts), "")

    def thread_text(self, channel: str, thread_ts: str | None) -> str:
        """The bot's messages in a thread (or top level of a DM when None), joined by blank lines."""
        msgs = [m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts]
        return "\n\n".join(m.text for m in sorted(msgs, key=lambda m: _ts_key(m.ts)))

    # ------------------------------------------------------------------ failure switches

    def rate_limit(self, method: str, *, times: int = 1, retry_after_s: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer HTTP 429 with ``Retry-After``."""
        self._faults.append(Fault(method, "ratelimited", times, retry_after_s))

    def fail_next(self, method: str, error: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer ``{"ok": false, "error": error}``."""
        self._faults.append(Fault(method, error, times))

    def expire_stream(self, ts: str) -> None:
        """Make the stream of message ``ts`` end as Slack ends streams after ~5 minutes."""
        self.messages[ts].stream_expired = True

    def next_ts(self) -> str:
        return f"{self._ts_base}.{next(self._ts):06d}"

    # ------------------------------------------------------------------ Web API

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _read_args(request)
        token = _bearer(request) or args.pop("token", None)
        call = Call(method=method, args=args, token=token)
        self.calls.append(call)
        try:
            self._check_token(method, token)
            self._inject_fault(method)
            body = await self._dispatch(method, args)
        except SlackError as exc:
            call.ok, call.error = False, exc.error
            headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else {}
            return web.json_response({"ok": False, "error": exc.error}, status=exc.status, headers=headers)
        return web.json_response({"ok": True, **body})

    def _check_token(self, method: str, token: str | None) -> None:
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token is None:
            raise SlackError("not_authed")
        if token != expected:
            raise SlackError("invalid_auth")

    def _inject_fault(self, method: str) -> None:
        for fault in self._faults:
            if fault.method == method and fault.times > 0:
                fault.times -= 1
                if fault.error == "ratelimited":
                    raise SlackError("ratelimited", status=429, retry_after_s=fault.retry_after_s)
                raise SlackError(fault.error)

    async def _dispatch(self, method: str, args: Args) -> Args:
        handlers = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "reactions.add": self._reaction_add,
            "reactions.remove": self._reaction_remove,
            "assistant.threads.setStatus": self._set_status,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroup_users,
            "conversations.info": self._conversations_info,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "apps.connections.open": self._connections_open,
        }
        handler = handlers.get(method)
        if handler is None:
            raise SlackError("unknown_method")
        return handler(args)

    def _auth_test(self, args: Args) -> Args:
        return {"url": "https://emulated.slack.com/", "team": "Emulated", "user": "switchboard",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _writable_channel(self, args: Args, key: str = "channel") -> str:
        channel = args.get(key)
        if not channel:
            raise SlackError("channel_not_found")
        channel = str(channel)
        if channel in self.unknown_channels:
            raise SlackError("channel_not_found")
        if channel in self.not_in_channel:
            raise SlackError("not_in_channel")
        return channel

    def _checked_text(self, args: Args, *, required: bool = True) -> str:
        text = _text_of(args)
        if required and not text:
            raise SlackError("no_text")
        if len(text) > self.max_text_chars:
            raise SlackError("msg_too_long")
        return text

    def _post_message(self, args: Args) -> Args:
        channel = self._writable_channel(args)
        text = self._checked_text(args)
        ts = self.next_ts()
        thread_ts = args.get("thread_ts") or None
        self._replied(channel, thread_ts)
        self.messages[ts] = Message(channel=channel, ts=ts, text=text, thread_ts=thread_ts, kind="post",
                                    edits=[text], blocks=_json_arg(args.get("blocks")),
                                    metadata=_json_arg(args.get("metadata")))
        return {"channel": channel, "ts": ts, "message": {"text": text, "ts": ts, "user": self.bot_user_id,
                                                          "bot_id": self.bot_id, "thread_ts": thread_ts}}

    def _replied(self, channel: str, thread_ts: str | None) -> None:
        """The bot posted in a thread: Slack clears the assistant status shown there."""
        if thread_ts is not None:
            self.thread_status.pop((channel, thread_ts), None)

    def _message(self, args: Args) -> Message:
        message = self.messages.get(str(args.get("ts", "")))
        if message is None or message.channel != args.get("channel"):
            raise SlackError("message_not_found")
        return message

    def _update(self, args: Args) -> Args:
        self._writable_channel(args)
        message = self._message(args)
        if message.streaming and not self._stream_over(message):
            raise SlackError("streaming_state_conflict")
        message.streaming = False
        text = self._checked_text(args)
        message.text = text
        message.edits.append(text)
        message.blocks = _json_arg(args.get("blocks"))
        if args.get("metadata"):
            message.metadata = _json_arg(args["metadata"])
        return {"channel": message.channel, "ts": message.ts, "text": text}

    def _post_ephemeral(self, args: Args) -> Args:
        self._writable_channel(args)
        self.ephemerals.append(dict(args))
        return {"message_ts": self.next_ts()}

    def _start_stream(self, args: Args) -> Args:
        channel = self._writable_channel(args)
        if channel[:1] in self.refuse_streaming_in:
            raise SlackError(self.refuse_streaming_error)
        if not args.get("thread_ts"):
            raise SlackError("invalid_arguments")
        if not channel.startswith(DM_PREFIX):
            if not args.get("recipient_team_id"):
                raise SlackError("missing_recipient_team_id")
            if not args.get("recipient_user_id"):
                raise SlackError("missing_recipient_user_id")
        text = self._checked_text(args, required=False)
        ts = self.next_ts()
        self._replied(channel, str(args["thread_ts"]))
        self.messages[ts] = Message(channel=channel, ts=ts, text=text, thread_ts=str(args["thread_ts"]),
                                    kind="stream", edits=[text], streaming=True,
                                    stream_started_at=time.monotonic())
        return {"channel": channel, "ts": ts}

    def _stream_over(self, message: Message) -> bool:
        return message.stream_expired or time.monotonic() - message.stream_started_at > self.stream_ttl_s

    def _streaming_message(self, args: Args) -> Message:
        self._writable_channel(args)
        message = self._message(args)
        if not message.streaming or self._stream_over(message):
            raise SlackError("message_not_in_streaming_state")
        return message

    def _append_stream(self, args: Args) -> Args:
        message = self._streaming_message(args)
        message.text += self._checked_text(args, required=False)
        message.edits.append(message.text)
        return {"channel": message.channel, "ts": message.ts}

    def _stop_stream(self, args: Args) -> Args:
        message = self._streaming_message(args)
        message.text += self._checked_text(args, required=False)
        message.edits.append(message.text)
        message.streaming = False
        message.blocks = _json_arg(args.get("blocks"))
        if args.get("metadata"):
            message.metadata = _json_arg(args["metadata"])
        return {"channel": message.channel, "ts": message.ts, "message": {"text": message.text}}

    def _reaction_add(self, args: Args) -> Args:
        names = self.reactions.setdefault((str(args.get("channel")), str(args.get("timestamp"))), [])
        if args.get("name") in names:
            raise SlackError("already_reacted")
        names.append(str(args.get("name")))
        return {}

    def _reaction_remove(self, args: Args) -> Args:
        names = self.reactions.get((str(args.get("channel")), str(args.get("timestamp"))), [])
        if args.get("name") not in names:
            raise SlackError("no_reaction")
        names.remove(str(args.get("name")))
        return {}

    def _set_status(self, args: Args) -> Args:
        if self.set_status_error is not None:
            raise SlackError(self.set_status_error)
        self._writable_channel(args, "channel_id")
        where, status = (str(args["channel_id"]), str(args.get("thread_ts"))), str(args.get("status", ""))
        self.statuses.append((*where, status))
        if status:
            self.thread_status[where] = status
        else:
            self.thread_status.pop(where, None)
        return {}

    def _users_info(self, args: Args) -> Args:
        user = str(args.get("user", ""))
        info = {"id": user, "team_id": self.team_id, "name": user.lower(), "is_bot": False,
                "is_admin": False, "is_owner": False, **self.users.get(user, {})}
        return {"user": info}

    def _usergroup_users(self, args: Args) -> Args:
        group = str(args.get("usergroup", ""))
        if group not in self.usergroups:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _conversations_info(self, args: Args) -> Args:
        channel = str(args.get("channel", ""))
        if channel in self.unknown_channels:
            raise SlackError("channel_not_found")
        is_im = channel.startswith(DM_PREFIX)
        info = {"id": channel, "is_channel": channel.startswith("C"), "is_group": channel.startswith("G"),
                "is_im": is_im, "is_member": channel not in self.not_in_channel, **self.channels.get(channel, {})}
        return {"channel": info}

    def _conversations_replies(self, args: Args) -> Args:
        """A thread, oldest first: its parent, then the replies (``thread_not_found`` if none)."""
        channel, ts = self._writable_channel(args), str(args.get("ts", ""))
        if not any(m["ts"] == ts or m.get("thread_ts") == ts for m in self._channel_history(channel, {})):
            raise SlackError("thread_not_found")
        thread = [m for m in self._channel_history(channel, args) if m["ts"] == ts or m.get("thread_ts") == ts]
        return self._page(sorted(thread, key=lambda m: _ts_key(m["ts"])), args)

    def _conversations_history(self, args: Args) -> Args:
        """A channel's top-level messages (thread parents included, replies not), newest first."""
        channel = self._writable_channel(args)
        top = [m for m in self._channel_history(channel, args) if m.get("thread_ts") in (None, m["ts"])]
        return self._page(sorted(top, key=lambda m: _ts_key(m["ts"]), reverse=True), args)

    def _channel_history(self, channel: str, args: Args) -> list[Args]:
        """Every message in ``channel`` within ``oldest``/``latest``, as the history methods give them."""
        metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        oldest, latest = _ts_key(str(args.get("oldest") or "0")), _ts_key(str(args.get("latest") or "9" * 10))
        inclusive = str(args.get("inclusive", "")).lower() in ("1", "true")
        found = [{k: v for k, v in m.items() if k != "channel"} for m in self.said.values() if m["channel"] == channel]
        for m in self.messages.values():
            if m.channel != channel:
                continue
            shown: Args = {"type": "message", "ts": m.ts, "text": m.text, "user": self.bot_user_id,
                           "bot_id": self.bot_id, "app_id": self.app_id, "team": self.team_id}
            if m.thread_ts:
                shown["thread_ts"] = m.thread_ts
            if metadata and m.metadata:
                shown["metadata"] = m.metadata
            found.append(shown)
        return [m for m in found if (oldest <= _ts_key(m["ts"]) <= latest if inclusive
                                     else oldest < _ts_key(m["ts"]) < latest)]

    def _page(self, messages: list[Args], args: Args) -> Args:
        size = min(int(args.get("limit") or 100), self.history_page_size)
        try:
            start = int(base64.b64decode(str(args.get("cursor") or "") or b"").decode().removeprefix("offset:") or 0)
        except ValueError as exc:
            raise SlackError("invalid_cursor") from exc
        page, rest = messages[start:start + size], messages[start + size:]
        next_cursor = base64.b64encode(f"offset:{start + size}".encode()).decode() if rest else ""
        return {"messages": page, "has_more": bool(rest), "response_metadata": {"next_cursor": next_cursor}}

    def _connections_open(self, args: Args) -> Args:
        return {"url": f"ws://127.0.0.1:{self._port}/socket?ticket={uuid.uuid4().hex}"}

    # ------------------------------------------------------------------ Events API

    def mention_text(self, text: str) -> str:
        return f"<@{self.bot_user_id}> {text}"

    def message_event(
        self, *, text: str, channel: str, user: str = "U0ALICE", ts: str | None = None,
        thread_ts: str | None = None, channel_type: str | None = None, subtype: str | None = None,
        bot_id: str | None = None, event_type: str = "message",
    ) -> Args:
        """A ``message`` (or, with ``event_type="app_mention"``, a mention) as Slack sends it."""
        ts = ts or self.next_ts()
        event: Args = {"type": event_type, "text": text, "user": user, "ts": ts, "channel": channel,
                       "event_ts": ts, "team": self.team_id}
        if event_type == "message":
            event["channel_type"] = channel_type or _channel_type(channel)
        if bot_id is None and subtype is None:
            event["client_msg_id"] = str(uuid.uuid4())
        if thread_ts:
            event["thread_ts"] = thread_ts
        if subtype:
            event["subtype"] = subtype
        if bot_id:
            event["bot_id"] = bot_id
        self.said.setdefault(ts, {**{k: v for k, v in event.items() if k in _HISTORY_FIELDS}, "type": "message"})
        return event

    def mention_event(self, *, text: str, channel: str, user: str = "U0ALICE", ts: str | None = None,
                      thread_ts: str | None = None) -> Args:
        return self.message_event(text=self.mention_text(text), channel=channel, user=user, ts=ts,
                                  thread_ts=thread_ts, event_type="app_mention")

    def edit_event(self, *, channel: str, ts: str, new_text: str, user: str = "U0ALICE") -> Args:
        """A ``message_changed`` event: someone edited message ``ts``."""
        event_ts = self.next_ts()
        return {"type": "message", "subtype": "message_changed", "channel": channel, "ts": event_ts,
                "event_ts": event_ts, "channel_type": _channel_type(channel), "hidden": True,
                "message": {"type": "message", "user": user, "text": new_text, "ts": ts,
                            "edited": {"user": user, "ts": event_ts}},
                "previous_message": {"type": "message", "user": user, "text": "(before)", "ts": ts}}

    def event_callback(self, event: Args, *, event_id: str | None = None) -> Args:
        """The ``event_callback`` envelope Slack wraps every event in."""
        return {
            "token": "legacy-verification-token", "team_id": self.team_id, "api_app_id": "A0APP",
            "event": event, "type": "event_callback", "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()), "is_ext_shared_channel": False,
            "authorizations": [{"enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "event_context": uuid.uuid4().hex,
        }

    def slash_command(self, *, text: str, channel: str, user: str = "U0ALICE",
                      command: str = "/assistant") -> dict[str, str]:
        """A slash command's fields (form-encoded over HTTP, a JSON object over Socket Mode)."""
        return {
            "token": "legacy-verification-token", "team_id": self.team_id, "team_domain": "emulated",
            "channel_id": channel, "channel_name": "directmessage" if channel.startswith(DM_PREFIX) else "general",
            "user_id": user, "user_name": user.lower(), "command": command, "text": text, "api_app_id": "A0APP",
            "is_enterprise_install": "false", "response_url": f"http://127.0.0.1:{self._port}/respond/x",
            "trigger_id": f"{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:8]}",
        }

    def signed_headers(
        self, body: str, *, content_type: str = "application/json", timestamp: int | None = None,
        retry_num: int | None = None, retry_reason: str | None = None, secret: str | None = None,
    ) -> dict[str, str]:
        """The headers Slack sends with a request body: v0 signature, timestamp, retry markers."""
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        key = (secret if secret is not None else self.signing_secret).encode()
        digest = hmac.new(key, f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": stamp,
                   "X-Slack-Signature": f"v0={digest}", "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        return headers

    async def deliver(
        self, url: str, payload: Mapping[str, Any], *, form: bool = False, retry_num: int | None = None,
        retry_reason: str | None = None, secret: str | None = None,
    ) -> Delivery:
        """POST ``payload`` to our app as Slack would (JSON, or form-encoded for slash commands)."""
        assert self._session is not None, "start() the emulator first"
        if form:
            body, content_type = urllib.parse.urlencode(payload), "application/x-www-form-urlencoded"
        else:
            body, content_type = json.dumps(payload), "application/json"
        headers = self.signed_headers(body, content_type=content_type, retry_num=retry_num,
                                      retry_reason=retry_reason, secret=secret)
        started = time.perf_counter()
        async with self._session.post(url, data=body.encode(), headers=headers) as resp:
            text = await resp.text()
        return Delivery(status=resp.status, body=text, elapsed_ms=(time.perf_counter() - started) * 1000)

    # ------------------------------------------------------------------ Socket Mode

    async def _handle_socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.socket_connections += 1
        await ws.send_json({"type": "hello", "num_connections": len(self._sockets),
                            "debug_info": {"host": "emulated", "approximate_connection_time": 3600},
                            "connection_info": {"app_id": "A0APP"}})
        self.socket_connected.set()
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_ack(json.loads(msg.data))
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self.socket_connected.clear()
        return ws

    def _on_ack(self, data: Args) -> None:
        future = self._acks.get(str(data.get("envelope_id")))
        if future is not None and not future.done():
            future.set_result(data.get("payload"))

    async def socket_deliver(
        self, payload: Mapping[str, Any], *, kind: str = "events_api", retry_attempt: int = 0,
        retry_reason: str = "", timeout_s: float = 5.0,
    ) -> SocketAck | None:
        """Send one envelope to the connected app; the ack, or None if none came in ``timeout_s``."""
        await asyncio.wait_for(self.socket_connected.wait(), timeout=10)
        envelope_id = str(uuid.uuid4())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        envelope: Args = {"envelope_id": envelope_id, "payload": dict(payload), "type": kind,
                          "accepts_response_payload": kind != "events_api"}
        if kind == "events_api":
            envelope.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
        started = time.perf_counter()
        await self._sockets[-1].send_json(envelope)
        try:
            ack = await asyncio.wait_for(future, timeout=timeout_s)
        except TimeoutError:
            return None
        finally:
            del self._acks[envelope_id]
        return SocketAck(envelope_id=envelope_id, payload=ack, elapsed_ms=(time.perf_counter() - started) * 1000)


async def _read_args(request: web.Request) -> Args:
    args: Args = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return args
    raw = await request.read()
    if request.content_type == "application/json":
        args.update(json.loads(raw or b"{}"))
    else:
        args.update(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))
    return args


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer "):] if header.startswith("Bearer ") else None


def _json_arg(value: Any) -> Any:
    """Form-encoded calls carry JSON arrays as strings; JSON calls carry them as arrays."""
    if isinstance(value, str):
        return json.loads(value)
    return value


def _text_of(args: Args) -> str:
    """What a person sees: ``markdown_text``, else markdown ``chunks``, else ``text``, else markdown blocks."""
    if args.get("markdown_text"):
        return str(args["markdown_text"])
    chunks = _json_arg(args.get("chunks")) or []
    if chunks:
        return "".join(c.get("text", "") for c in chunks if c.get("type") == "markdown_text")
    blocks = _json_arg(args.get("blocks")) or []
    from_blocks = "\n".join(b.get("text", "") for b in blocks if b.get("type") == "markdown")
    return from_blocks or str(args.get("text") or "")


def _channel_type(channel: str) -> str:
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, fraction = ts.partition(".")
    return int(seconds), int(fraction or 0)
