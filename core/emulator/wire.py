"""Assistants API v2 wire objects as JSON-ready dicts, the error body, and cursor pagination.

Shapes follow the ``openai`` SDK's models (``types/beta/assistant.py``, ``threads/run.py``,
``threads/message.py``, ``threads/runs/run_step.py``) so the unmodified SDK parses them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

Obj = dict[str, Any]

ASSISTANT_FIELDS = (
    "name", "description", "model", "instructions", "tools", "tool_resources", "metadata",
    "temperature", "top_p", "response_format", "reasoning_effort",
)
ACTIVE_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})


class ApiError(Exception):
    """An error answer: HTTP ``status`` with the OpenAI body ``{"error": {...}}``."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error",
        param: str | None = None, code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> Obj:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_for_status(status: int) -> ApiError:
    """The error OpenAI would send for a bare HTTP ``status`` (used by ``!http`` and ``fail_next``)."""
    if status == 401:
        return ApiError(401, "Incorrect API key provided (emulated).", code="invalid_api_key")
    if status == 403:
        return ApiError(403, "You are not allowed to do this (emulated).", code="forbidden")
    if status == 404:
        return ApiError(404, "Not found (emulated).")
    if status == 429:
        return ApiError(429, "Rate limit reached (emulated).", type="requests", code="rate_limit_exceeded")
    if status >= 500:
        return ApiError(status, "The server had an error while processing your request (emulated).",
                        type="server_error")
    return ApiError(status, f"Request refused with HTTP {status} (emulated).")


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{object_id}'.")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def assistant(body: Mapping[str, Any]) -> Obj:
    """A new assistant from a create body; every create field is kept."""
    obj: Obj = {
        "id": new_id("asst"), "object": "assistant", "created_at": now(), "name": None,
        "description": None, "instructions": None, "tools": [], "tool_resources": {}, "metadata": {},
        "temperature": 1.0, "top_p": 1.0, "response_format": "auto", "reasoning_effort": None,
    }
    return update_assistant(obj, body)


def update_assistant(obj: Obj, body: Mapping[str, Any]) -> Obj:
    """Apply the fields present in ``body`` (an update keeps what it does not name)."""
    for field in ASSISTANT_FIELDS:
        if field in body:
            obj[field] = body[field]
    for field, empty in (("tools", []), ("tool_resources", {}), ("metadata", {})):
        if obj.get(field) is None:
            obj[field] = empty
    return obj


def thread(body: Mapping[str, Any]) -> Obj:
    return {
        "id": new_id("thread"), "object": "thread", "created_at": now(),
        "metadata": body.get("metadata") or {}, "tool_resources": body.get("tool_resources") or {},
    }


def text_part(value: str) -> Obj:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def message_content(content: Any) -> list[Obj]:
    """Normalise a create body's ``content`` (a string or content parts) to message content blocks."""
    if isinstance(content, str):
        return [text_part(content)]
    if not isinstance(content, list) or not content:
        raise ApiError(400, "Invalid 'content': expected a string or a non-empty array.", param="content")
    blocks: list[Obj] = []
    for part in content:
        if not isinstance(part, dict) or "type" not in part:
            raise ApiError(400, "Invalid content part.", param="content")
        blocks.append(text_part(str(part.get("text", ""))) if part["type"] == "text" else dict(part))
    return blocks


def message_text(message: Mapping[str, Any]) -> str:
    """The concatenated text of a message's content blocks."""
    return "".join(block["text"]["value"] for block in message["content"] if block.get("type") == "text")


def message(
    thread_id: str, *, role: str, content: list[Obj], run_id: str | None = None,
    assistant_id: str | None = None, status: str = "completed", body: Mapping[str, Any] | None = None,
) -> Obj:
    created = now()
    body = body or {}
    return {
        "id": new_id("msg"), "object": "thread.message", "created_at": created, "thread_id": thread_id,
        "role": role, "content": content, "assistant_id": assistant_id, "run_id": run_id,
        "attachments": body.get("attachments") or [], "metadata": body.get("metadata") or {},
        "status": status, "completed_at": created if status == "completed" else None,
        "incomplete_at": None, "incomplete_details": None,
    }


def run(thread_id: str, assistant_obj: Mapping[str, Any], body: Mapping[str, Any]) -> Obj:
    """A new queued run: the assistant's settings with the body's per-run overrides applied."""
    instructions = body.get("instructions")
    if instructions is None:
        instructions = assistant_obj.get("instructions") or ""
    if body.get("additional_instructions"):
        instructions = f"{instructions}\n\n{body['additional_instructions']}".strip()

    def pick(field: str, default: Any = None) -> Any:
        value = body.get(field)
        return value if value is not None else assistant_obj.get(field, default)

    return {
        "id": new_id("run"), "object": "thread.run", "created_at": now(), "thread_id": thread_id,
        "assistant_id": assistant_obj["id"], "status": "queued", "required_action": None,
        "last_error": None, "expires_at": None, "started_at": None, "cancelled_at": None,
        "failed_at": None, "completed_at": None, "incomplete_details": None,
        "model": pick("model"), "instructions": instructions, "tools": pick("tools", []),
        "metadata": body.get("metadata") or {}, "usage": None,
        "temperature": pick("temperature"), "top_p": pick("top_p"),
        "max_prompt_tokens": body.get("max_prompt_tokens"),
        "max_completion_tokens": body.get("max_completion_tokens"),
        "truncation_strategy": body.get("truncation_strategy") or {"type": "auto", "last_messages": None},
        "response_format": pick("response_format", "auto"), "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "reasoning_effort": pick("reasoning_effort"),
    }


def function_names(tools: Sequence[Mapping[str, Any]]) -> set[str]:
    return {t["function"]["name"] for t in tools if t.get("type") == "function" and "function" in t}


def step(run_obj: Mapping[str, Any], details: Obj) -> Obj:
    return {
        "id": new_id("step"), "object": "thread.run.step", "created_at": now(),
        "run_id": run_obj["id"], "assistant_id": run_obj["assistant_id"], "thread_id": run_obj["thread_id"],
        "type": details["type"], "status": "in_progress", "cancelled_at": None, "completed_at": None,
        "expired_at": None, "failed_at": None, "last_error": None, "step_details": details,
        "usage": None, "metadata": {},
    }


def usage(prompt: int, completion: int) -> Obj:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def deleted(kind: str, object_id: str) -> Obj:
    return {"id": object_id, "object": f"{kind}.deleted", "deleted": True}


def paginate(items: Sequence[Obj], query: Mapping[str, str]) -> Obj:
    """One page of a cursor list. ``items`` are oldest first; ``query`` holds ``limit`` (1-100,
    default 20), ``order`` (``asc``/``desc``, default ``desc``), ``after`` and ``before`` (ids)."""
    limit = _limit(query.get("limit", "20"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid 'order': '{order}'. Expected 'asc' or 'desc'.", param="order")
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [item["id"] for item in ordered]
    if after := query.get("after"):
        ordered = ordered[ids.index(after) + 1:] if after in ids else []
    if before := query.get("before"):
        ordered = ordered[:ids.index(before)] if before in ids else []
        page, has_more = ordered[-limit:], len(ordered) > limit
    else:
        page, has_more = ordered[:limit], len(ordered) > limit
    return {
        "object": "list", "data": page, "has_more": has_more,
        "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
    }


def _limit(raw: str) -> int:
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise ApiError(400, f"Invalid 'limit': {raw}. Expected an integer from 1 to 100.", param="limit")
    return limit
