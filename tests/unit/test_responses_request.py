"""Pure parts of the Responses backend: a profile as request fields, and replay budgets."""

from __future__ import annotations

from typing import Any

from core.backends.responses_history import Budget, trim
from core.backends.responses_request import (
    builtin_tools,
    output_text,
    replay_items,
    request_options,
    text_config,
    tool_calls,
    tool_choice,
)
from core.config import ProfileConfig, ToolConfig
from core.models import ToolCall


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def tool_round(output: str) -> list[dict[str, Any]]:
    return [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": output}]


def test_unset_settings_are_not_sent() -> None:
    options = request_options("p", ProfileConfig(model="m"), {}, message_id="m1")
    assert options == {"model": "m", "metadata": {"switchboard_profile": "p", "switchboard_message": "m1"}}


def test_profile_tools_are_flat_and_not_strict() -> None:
    tools = {"lookup": ToolConfig(url="http://127.0.0.1:9/x", description="Find it")}
    options = request_options("p", ProfileConfig(model="m", tools=["lookup"]), tools, message_id="m1")
    assert options["tools"] == [{"type": "function", "name": "lookup", "description": "Find it",
                                 "parameters": {"type": "object", "properties": {}}, "strict": False}]


def test_assistants_shapes_become_responses_shapes() -> None:
    assert text_config({"type": "json_object"}) == {"format": {"type": "json_object"}}
    assert text_config("auto") is None
    assert text_config({"type": "json_schema", "json_schema": {"name": "n", "schema": {}, "strict": True}}) == {
        "format": {"type": "json_schema", "name": "n", "schema": {}, "strict": True}}
    assert tool_choice({"type": "function", "function": {"name": "f"}}) == {"type": "function", "name": "f"}
    assert tool_choice({"type": "function", "name": "f"}) == {"type": "function", "name": "f"}
    assert tool_choice("required") == "required"


def test_tool_resources_move_into_builtin_tools() -> None:
    profile = ProfileConfig(model="m", builtin_tools=[{"type": "file_search"}, {"type": "code_interpreter"}],
                            tool_resources={"file_search": {"vector_store_ids": ["vs_1"]},
                                            "code_interpreter": {"file_ids": ["file_1"]}})
    assert builtin_tools(profile) == [
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file_1"]}},
    ]


def test_trim_keeps_the_newest_whole_turns() -> None:
    turns = [[user("a"), assistant("A")], [user("b"), *tool_round("x"), assistant("B")], [user("c"), assistant("C")]]
    assert trim(turns, Budget(max_messages=4, max_chars=10_000)) == turns[1:]
    assert trim(turns, Budget(max_messages=3, max_chars=10_000)) == turns[2:]


def test_trim_counts_characters_of_every_item() -> None:
    turns = [[user("a"), assistant("A")], [user("b"), *tool_round("y" * 50), assistant("B")]]
    assert trim(turns, Budget(max_messages=50, max_chars=55)) == turns[1:]  # 1 + 2 + 50 + 1 chars
    assert trim(turns, Budget(max_messages=50, max_chars=100)) == turns


def test_a_newest_turn_over_budget_keeps_only_its_messages_or_nothing() -> None:
    older, big = [user("a"), assistant("A")], [user("b"), *tool_round("z" * 500), assistant("B")]
    assert trim([older, big], Budget(max_messages=50, max_chars=100)) == [older, [user("b"), assistant("B")]]
    huge = [user("b"), assistant("B" * 500)]
    assert trim([older, huge], Budget(max_messages=50, max_chars=100)) == []


# A response's output as the stream carries it (JSON), with the kinds that are not replayed.
OUTPUT: list[dict[str, Any]] = [
    {"type": "reasoning", "id": "rs_1", "summary": []},
    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
        {"type": "output_text", "text": "Hello ", "annotations": []},
        {"type": "refusal", "refusal": "no."},
        {"type": "output_text", "text": "there", "annotations": []}]},
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": '{"a": 1}',
     "status": "completed"},
    {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    {"type": "message", "id": "msg_2", "role": "assistant", "status": "completed", "content": []},
]


def test_output_items_become_replayed_input_items() -> None:
    assert replay_items(OUTPUT) == [
        {"role": "assistant", "content": "Hello no.there"},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a": 1}'},
    ]


def test_output_text_is_the_messages_text_without_refusals() -> None:
    assert output_text(OUTPUT) == "Hello there"
    assert output_text([]) == ""


def test_tool_calls_are_the_function_calls_in_order() -> None:
    second = {**OUTPUT[2], "call_id": "call_2", "name": "g"}
    assert tool_calls([*OUTPUT, second]) == [ToolCall(call_id="call_1", name="f", arguments='{"a": 1}'),
                                             ToolCall(call_id="call_2", name="g", arguments='{"a": 1}')]
