"""Responses and Conversations API wire objects as JSON-ready dicts, and readers of input items.

Shapes follow the ``openai`` SDK's models (``types/responses/response.py``,
``response_output_message.py``, ``response_function_tool_call.py``, ``types/conversations/``)
so the unmodified SDK parses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.emulator.wire import ApiError, Obj, new_id, now


def response(body: Mapping[str, Any], *, conversation_id: str | None) -> Obj:
    """A new in-progress response echoing the request's settings (what the emulator "used")."""
    return {
        "id": new_id("resp"), "object": "response", "created_at": now(), "status": "in_progress",
        "background": False, "model": body.get("model"), "instructions": body.get("instructions"),
        "output": [], "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "temperature": body.get("temperature"),
        "top_p": body.get("top_p"), "max_output_tokens": body.get("max_output_tokens"),
        "reasoning": body.get("reasoning"), "text": body.get("text") or {"format": {"type": "text"}},
        "truncation": body.get("truncation") or "disabled", "metadata": body.get("metadata") or {},
        "previous_response_id": body.get("previous_response_id"), "store": body.get("store", True),
        "conversation": {"id": conversation_id} if conversation_id else None,
        "usage": None, "error": None, "incomplete_details": None,
    }


def output_text(text: str) -> Obj:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def assistant_message() -> Obj:
    return {"id": new_id("msg"), "type": "message", "role": "assistant", "status": "in_progress", "content": []}


def function_call(name: str, arguments: str) -> Obj:
    """A function call output item; ``arguments`` stays empty until streamed."""
    return {"id": new_id("fc"), "type": "function_call", "call_id": new_id("call"), "name": name,
            "arguments": arguments, "status": "in_progress"}


def usage(input_tokens: int, output_tokens: int) -> Obj:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def conversation(body: Mapping[str, Any]) -> Obj:
    return {"id": new_id("conv"), "object": "conversation", "created_at": now(), "metadata": body.get("metadata") or {}}


def item_list(items: Sequence[Obj]) -> Obj:
    """The answer to adding items to a conversation."""
    return {"object": "list", "data": list(items), "has_more": False,
            "first_id": items[0]["id"] if items else None, "last_id": items[-1]["id"] if items else None}


# --- input items --------------------------------------------------------------------------------

def input_items(raw: Any) -> list[Obj]:
    """A request's ``input`` (a string or a list of items) as stored items, each with an ``id``."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ApiError(400, "Invalid 'input': expected a string or an array of input items.", param="input")
    return [stored_item(item) for item in raw]


def stored_item(item: Mapping[str, Any]) -> Obj:
    """An input item the way the server keeps it: typed, with an ID and a status."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise ApiError(400, "Invalid 'input': a message needs a role.", param="input")
        part_type = "output_text" if role == "assistant" else "input_text"
        return {"id": item.get("id") or new_id("msg"), "type": "message", "role": role, "status": "completed",
                "content": [{"type": part_type, "text": text} for text in _texts(item.get("content"))]}
    if kind == "function_call":
        return {"status": "completed", **item, "id": item.get("id") or new_id("fc")}
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise ApiError(400, "Missing required parameter: 'input[].call_id'.", param="input")
        return {"status": "completed", **item, "id": item.get("id") or new_id("fco")}
    raise ApiError(400, f"Invalid 'input': unsupported item type '{kind}'.", param="input")


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise ApiError(400, "Invalid 'content': expected a string or an array of parts.", param="input")
    return [str(part.get("text", "")) for part in content if isinstance(part, dict)]


def message_text(item: Mapping[str, Any]) -> str:
    return "".join(str(part.get("text", "")) for part in item.get("content") or [])


def is_user_message(item: Mapping[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


def user_texts(items: Iterable[Obj]) -> list[str]:
    return [message_text(item) for item in items if is_user_message(item)]


def function_names(tools: Sequence[Mapping[str, Any]]) -> set[str]:
    """The function tools of a request, in the Responses (flat) shape."""
    return {str(t["name"]) for t in tools if t.get("type") == "function" and "name" in t}
