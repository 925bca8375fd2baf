"""What a profile means as Responses API request fields, and the input items of a conversation.

Pure functions, no I/O. A profile written for the Assistants API (``response_format``,
``max_completion_tokens``, nested function tools, ``tool_resources``) is translated to the
Responses shapes here, once, so profiles move between backend kinds unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.backends.catalog import function_tools
from core.config import ProfileConfig, ToolConfig
from core.models import ToolCall, ToolOutput

Item = dict[str, Any]

PROFILE_TAG = "switchboard_profile"
MESSAGE_TAG = "switchboard_message"


def request_options(
    profile_name: str, profile: ProfileConfig, tools: Mapping[str, ToolConfig], *, message_id: str,
) -> dict[str, Any]:
    """The profile's settings as ``responses.create`` keyword arguments; unset settings are left out.

    ``max_prompt_tokens`` has no Responses equivalent and is not sent.
    """
    instructions = "\n\n".join(t for t in (profile.instructions, profile.additional_instructions) if t)
    fields: dict[str, Any] = {
        "model": profile.model,
        "instructions": instructions or None,
        "tools": flat_function_tools(profile.tools, tools) + builtin_tools(profile) or None,
        "tool_choice": tool_choice(profile.tool_choice),
        "temperature": profile.temperature,
        "top_p": profile.top_p,
        "reasoning": {"effort": profile.reasoning_effort} if profile.reasoning_effort else None,
        "max_output_tokens": profile.max_completion_tokens,
        "text": text_config(profile.response_format),
        "truncation": "auto" if profile.truncation_strategy else None,
        "metadata": {**profile.metadata, PROFILE_TAG: profile_name, MESSAGE_TAG: message_id},
    }
    return {k: v for k, v in fields.items() if v is not None}


def flat_function_tools(names: list[str], tools: Mapping[str, ToolConfig]) -> list[Item]:
    """Function tools in the Responses shape (flat, ``strict`` off as on the Assistants API, so the
    tool config's JSON Schemas need not satisfy strict mode)."""
    return [{"type": "function", **tool["function"], "strict": False} for tool in function_tools(names, tools)]


def builtin_tools(profile: ProfileConfig) -> list[Item]:
    """``builtin_tools`` with what the Assistants API kept in ``tool_resources`` moved into each tool."""
    resources = profile.tool_resources or {}
    out: list[Item] = []
    for tool in profile.builtin_tools:
        tool = dict(tool)
        if tool["type"] == "file_search" and "vector_store_ids" not in tool:
            tool["vector_store_ids"] = resources.get("file_search", {}).get("vector_store_ids", [])
        if tool["type"] == "code_interpreter" and "container" not in tool:
            files = resources.get("code_interpreter", {}).get("file_ids", [])
            tool["container"] = {"type": "auto", **({"file_ids": files} if files else {})}
        out.append(tool)
    return out


def tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """``{type: function, function: {name}}`` (Assistants) becomes ``{type: function, name}``."""
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        return {"type": "function", "name": choice["function"].get("name")}
    return choice


def text_config(response_format: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """``response_format`` (Assistants) as ``text.format``: ``json_schema`` is flattened; ``auto`` is the default."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema") or {}
        return {"format": {"type": "json_schema", **schema}}
    return {"format": {"type": response_format["type"]}}


# --- input items ------------------------------------------------------------------------------

def user_message(text: str) -> Item:
    return {"role": "user", "content": text}


def function_outputs(outputs: list[ToolOutput]) -> list[Item]:
    return [{"type": "function_call_output", "call_id": o.call_id, "output": o.output} for o in outputs]


# --- a response's output items (its JSON, as the stream carries it) ------------------------------

def replay_items(output: Sequence[Mapping[str, Any]]) -> list[Item]:
    """A response's output items as input items for a later request: assistant messages (their
    text, refusals included) and function calls. Reasoning and built-in tool items are not replayed."""
    items: list[Item] = []
    for item in output:
        if item.get("type") == "message":
            if text := _message_text(item, ("output_text", "refusal")):
                items.append({"role": "assistant", "content": text})
        elif item.get("type") == "function_call":
            items.append({"type": "function_call", "call_id": item["call_id"], "name": item["name"],
                          "arguments": item["arguments"]})
    return items


def output_text(output: Sequence[Mapping[str, Any]]) -> str:
    """The text of a response's messages (refusals left out), as the SDK's ``Response.output_text``."""
    return "".join(_message_text(item, ("output_text",)) for item in output if item.get("type") == "message")


def tool_calls(output: Sequence[Mapping[str, Any]]) -> list[ToolCall]:
    """The function calls among a response's output items, in order."""
    return [ToolCall(call_id=item["call_id"], name=item["name"], arguments=item["arguments"])
            for item in output if item.get("type") == "function_call"]


def _message_text(message: Mapping[str, Any], kinds: tuple[str, ...]) -> str:
    """The message's content parts of ``kinds``: ``output_text`` parts' ``text``, ``refusal`` parts' ``refusal``."""
    return "".join(part.get("text" if part.get("type") == "output_text" else "refusal") or ""
                   for part in message.get("content") or [] if part.get("type") in kinds)
