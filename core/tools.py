"""The tool-endpoint client (SPEC §7): function calls of a run become signed HTTP POSTs.

``HttpToolRunner`` implements ``core.ports.ToolRunner``. Every call of a round is answered, in
parallel, and every failure (a tool the profile may not call, bad arguments, an endpoint that
fails, hangs, redirects or answers too much) becomes an output ``{"error": "…"}`` for the run,
so the run always finishes. Error texts and log lines never contain secrets or header values.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx2
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from core.config import ToolConfig
from core.errors import ConfigError
from core.metrics import TOOL_CALLS, TOOL_SECONDS
from core.models import ToolCall, ToolOutput
from core.ports import ToolContext
from core.tracing import child_traceparent

logger = logging.getLogger(__name__)

UNKNOWN_TOOL_LABEL = "(unknown)"
"""Metric label for names with no configured tool: the model chooses them, so they stay unbounded."""

_EXCERPT_BYTES = 2048
_EXCERPT_CHARS = 200
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def _user_agent() -> str:
    try:
        version = importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"switchboard/{version}"


USER_AGENT = _user_agent()


@dataclass(frozen=True)
class _Result:
    outcome: str
    output: str
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class _TooLarge(Exception):
    """The response body passed ``max_response_bytes``; reading stopped there."""


def _error(message: str, outcome: str, status: int | None = None) -> _Result:
    return _Result(outcome=outcome, output=json.dumps({"error": message}), status=status)


class HttpToolRunner:
    """Resolves function calls by POSTing to the endpoints configured under ``tools:``.

    ``http`` is the process's shared client; no request follows a redirect whatever its default.
    Construction is cheap (re-create it when the config reloads); it raises ``ConfigError`` when
    a tool's ``secret`` is not a usable Standard Webhooks secret.
    """

    def __init__(self, *, tools: Mapping[str, ToolConfig], http: httpx2.AsyncClient) -> None:
        self._tools = dict(tools)
        self._http = http
        self._signers = _signers(self._tools)

    async def run_calls(
        self, *, profile_tools: list[str], calls: list[ToolCall], context: ToolContext
    ) -> list[ToolOutput]:
        """Answer every call, in parallel; outputs come back in the order of ``calls``."""
        allowed = frozenset(profile_tools)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._run_one(call, allowed, context)) for call in calls]
        return [task.result() for task in tasks]

    async def _run_one(self, call: ToolCall, allowed: frozenset[str], context: ToolContext) -> ToolOutput:
        started = time.perf_counter()
        label = call.name if call.name in self._tools else UNKNOWN_TOOL_LABEL
        try:
            result = await self._resolve(call, allowed, context)
        except Exception:
            # Last resort for this call only: a bug here must not cancel the other calls or the run.
            logger.exception("tool call %s crashed", call.call_id, extra={"tool": label, "call_id": call.call_id})
            result = _error("the gateway failed to call this tool", "internal_error")
        elapsed = time.perf_counter() - started
        _record(label, call.call_id, result, elapsed)
        return ToolOutput(call_id=call.call_id, output=result.output, ok=result.ok)

    async def _resolve(self, call: ToolCall, allowed: frozenset[str], context: ToolContext) -> _Result:
        tool = self._tools.get(call.name)
        if tool is None:
            return _error(f"no tool named {call.name[:64]!r} is configured", "unknown_tool")
        if call.name not in allowed:
            return _error(f"tool {call.name!r} is not enabled for this assistant", "not_allowed")
        try:
            arguments = json.loads(call.arguments)
        except (ValueError, RecursionError) as exc:
            return _error(f"arguments are not valid JSON ({_describe_json_error(exc)})", "invalid_arguments")
        if not isinstance(arguments, dict):
            return _error("arguments must be a JSON object", "invalid_arguments")
        started = time.perf_counter()
        try:
            return await self._exchange(call, tool, arguments, context)
        finally:
            TOOL_SECONDS.labels(tool=call.name).observe(time.perf_counter() - started)

    async def _exchange(
        self, call: ToolCall, tool: ToolConfig, arguments: dict[str, Any], context: ToolContext
    ) -> _Result:
        body = _body(call, arguments, context)
        headers = self._headers(call, tool, body, context)
        try:
            async with asyncio.timeout(tool.timeout_s):
                return await self._send(tool, body, headers)
        except (TimeoutError, httpx2.TimeoutException):
            return _error(f"tool endpoint did not answer within {tool.timeout_s:g} s", "timeout")
        except httpx2.InvalidURL:
            return _error("tool endpoint URL is invalid", "connection_error")
        except httpx2.HTTPError as exc:
            return _error(f"tool endpoint could not be reached ({type(exc).__name__})", "connection_error")

    def _headers(self, call: ToolCall, tool: ToolConfig, body: str, context: ToolContext) -> httpx2.Headers:
        headers = httpx2.Headers({name: value.get_secret_value() for name, value in tool.headers.items()})
        headers["User-Agent"] = USER_AGENT
        headers["Content-Type"] = "application/json"
        now = datetime.fromtimestamp(int(time.time()), tz=UTC)
        headers["webhook-id"] = call.call_id
        headers["webhook-timestamp"] = str(int(now.timestamp()))
        signer = self._signers.get(call.name)
        if signer is not None:
            headers["webhook-signature"] = signer.sign(msg_id=call.call_id, timestamp=now, data=body)
        if context.traceparent is not None:
            headers["traceparent"] = child_traceparent(context.traceparent).header()
        return headers

    async def _send(self, tool: ToolConfig, body: str, headers: httpx2.Headers) -> _Result:
        async with self._http.stream(
            "POST", tool.url, content=body.encode(), headers=headers,
            follow_redirects=False, timeout=tool.timeout_s,
        ) as response:
            status = response.status_code
            if 300 <= status < 400:
                return _error(f"tool endpoint answered HTTP {status}; redirects are not followed",
                              "redirect", status)
            if not 200 <= status < 300:
                prefix, cut = await _read_prefix(response, _EXCERPT_BYTES)
                excerpt = _excerpt(prefix, cut=cut, redactions=_redactions(tool))
                detail = f": {excerpt}" if excerpt else ""
                return _error(f"tool endpoint answered HTTP {status}{detail}", "http_error", status)
            try:
                content = await _read_capped(response, tool.max_response_bytes)
            except _TooLarge:
                return _error(f"tool endpoint answer is larger than {tool.max_response_bytes} bytes",
                              "too_large", status)
            return _Result(outcome="ok", output=_output(content, response.charset_encoding), status=status)



def _signers(tools: Mapping[str, ToolConfig]) -> dict[str, Webhook]:
    signers: dict[str, Webhook] = {}
    problems: list[str] = []
    for name, tool in tools.items():
        if tool.secret is None:
            continue
        try:
            signers[name] = Webhook(tool.secret.get_secret_value())
        except (ValueError, RuntimeError, EmptyWebhookSecretError) as exc:  # binascii.Error is a ValueError
            problems.append(f"tools.{name}.secret: not a valid Standard Webhooks secret ({type(exc).__name__})")
    if problems:
        raise ConfigError("tools", problems)
    return signers


def _body(call: ToolCall, arguments: dict[str, Any], context: ToolContext) -> str:
    """The request body; ASCII-only, so the signed text and the bytes sent are the same."""
    payload = {
        "tool": call.name,
        "call_id": call.call_id,
        "arguments": arguments,
        "run_id": context.run_id,
        "thread_id": context.thread_id,
        "assistant_id": context.assistant_id,
        "context": {
            "platform": context.platform,
            "workspace": context.workspace,
            "channel": context.channel,
            "user": context.user,
            "conversation": context.conversation,
        },
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


async def _read_capped(response: httpx2.Response, cap: int) -> bytes:
    """The whole (decoded) body, or ``_TooLarge`` as soon as it passes ``cap`` bytes."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_prefix(response: httpx2.Response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body (the rest is never read), and whether it was cut."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _redactions(tool: ToolConfig) -> list[str]:
    """Every configured secret value, and the token part of values such as ``Bearer <token>``."""
    values = [value.get_secret_value() for value in tool.headers.values()]
    if tool.secret is not None:
        values.append(tool.secret.get_secret_value())
    parts = [part for value in values for part in value.split() if len(part) >= 8]
    return sorted({v for v in values + parts if v}, key=len, reverse=True)


def _decode(content: bytes, charset: str | None) -> str:
    try:
        return content.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return content.decode("utf-8", errors="replace")


def _output(content: bytes, charset: str | None) -> str:
    """SPEC §7: ``{"output": str}`` as is, ``{"output": other}`` and other JSON encoded, else text."""
    try:
        value = json.loads(content)
    except (ValueError, RecursionError):
        return _decode(content, charset)
    if isinstance(value, dict) and "output" in value:
        value = value["output"]
        if isinstance(value, str):
            return value
    return json.dumps(value, ensure_ascii=False)


def _excerpt(content: bytes, *, cut: bool, redactions: list[str]) -> str:
    """A short, single-line excerpt of an error body, with any configured secret blanked out.

    When the body was ``cut``, its tail is dropped too: it could hold the start of a secret.
    """
    text = _decode(content, None)
    if cut and redactions:
        text = text[: -len(redactions[0])]
    for secret in redactions:
        text = text.replace(secret, "[redacted]")
    text = _UNSAFE_CHARS.sub(" ", text).strip()
    return text[:_EXCERPT_CHARS] + ("…" if len(text) > _EXCERPT_CHARS else "")


def _describe_json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at position {exc.pos}"
    return "nested too deeply" if isinstance(exc, RecursionError) else "cannot be decoded"


def _record(label: str, call_id: str, result: _Result, elapsed_s: float) -> None:
    TOOL_CALLS.labels(tool=label, outcome=result.outcome).inc()
    ms = round(elapsed_s * 1000)
    fields = {"tool": label, "call_id": call_id, "outcome": result.outcome, "status": result.status, "ms": ms}
    level = logging.INFO if result.ok else logging.WARNING
    logger.log(level, "tool %s call %s: %s (HTTP %s, %d ms)",
               label, call_id, result.outcome, result.status, ms, extra=fields)
