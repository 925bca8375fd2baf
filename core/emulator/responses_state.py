"""The Responses emulator's in-memory state and the API's rules on it: conversations and their
items, stored responses, how a request's context is assembled, and tool-output validation.

The context of a request is what a real model would see: the conversation's items
(``conversation``), or the chain of stored responses (``previous_response_id``), then the
request's own ``input``. The scripted model answers the latest user message of that context and
counts its user messages, so a test sees whether a state mode really carried the history.
Everything here is synchronous: no await between a check and its write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from core.emulator import responses_wire as rw
from core.emulator import script, wire
from core.emulator.wire import ApiError, Obj


@dataclass
class ConversationRec:
    obj: Obj
    items: list[Obj] = field(default_factory=list)


@dataclass
class ResponseRec:
    """A response: its wire object, the context it was answered from, and what the model decided."""

    obj: Obj
    context: list[Obj]
    new_items: list[Obj]
    reply: script.Reply
    directives: script.Directives

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def user_messages(self) -> int:
        return len(rw.user_texts(self.context))


class ResponsesState:
    """Switches (``conversations_enabled``, ``store_enabled``: off answers like a server without
    them), test knobs (``repeat_tool_calls``, ``stream_errors``) and what tests observe:
    ``created`` (every response, stored or not) and ``conversations``."""

    def __init__(self) -> None:
        self.conversations_enabled = True
        self.store_enabled = True
        self.repeat_tool_calls = False
        """After tool outputs, call the same functions again (a model stuck in a tool loop)."""
        self.stream_errors = 0
        """The next this many responses stream an ``error`` event instead of an answer."""
        self.conversations: dict[str, ConversationRec] = {}
        self.stored: dict[str, ResponseRec] = {}
        self.created: list[ResponseRec] = []
        self._dropped: set[tuple[str, int]] = set()

    # -- conversations ----------------------------------------------------------------------------

    def conversation(self, conversation_id: str) -> ConversationRec:
        self._require_conversations()
        if conversation_id not in self.conversations:
            raise wire.not_found("conversation", conversation_id)
        return self.conversations[conversation_id]

    def create_conversation(self, body: Mapping[str, Any]) -> ConversationRec:
        self._require_conversations()
        rec = ConversationRec(rw.conversation(body), rw.input_items(body.get("items")))
        self.conversations[rec.obj["id"]] = rec
        return rec

    def add_items(self, conversation_id: str, raw: Any) -> list[Obj]:
        rec = self.conversation(conversation_id)
        items = rw.input_items(raw)
        rec.items += items
        return items

    def item(self, conversation_id: str, item_id: str) -> Obj:
        found = next((i for i in self.conversation(conversation_id).items if i["id"] == item_id), None)
        if found is None:
            raise wire.not_found("item", item_id)
        return found

    def _require_conversations(self) -> None:
        if not self.conversations_enabled:
            raise ApiError(404, "Not found: this server has no Conversations API (emulated).")

    # -- responses ----------------------------------------------------------------------------------

    def stored_response(self, response_id: str) -> ResponseRec:
        if response_id not in self.stored:
            raise wire.not_found("response", response_id)
        return self.stored[response_id]

    def create_response(self, body: Mapping[str, Any]) -> ResponseRec:
        """A new response: its context assembled and checked, the scripted reply decided."""
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        new_items = rw.input_items(body.get("input"))
        _check_http_directive(new_items)
        history, conversation_id = self._history(body)
        context = history + new_items
        _check_tool_outputs(context)
        latest = (rw.user_texts(context) or [""])[-1]
        rec = ResponseRec(rw.response(body, conversation_id=conversation_id), context, new_items,
                          reply=self._reply(body, context, latest), directives=self._directives(context, latest))
        self.created.append(rec)
        if self.store_enabled and rec.obj.get("store") is not False:
            self.stored[rec.id] = rec  # retrievable while it plays, as on OpenAI
        return rec

    def finish(self, rec: ResponseRec) -> None:
        """A completed response adds its input and output to its conversation."""
        conversation = rec.obj.get("conversation")
        if conversation and rec.obj["status"] == "completed" and conversation["id"] in self.conversations:
            self.conversations[conversation["id"]].items += rec.new_items + rec.obj["output"]

    def _history(self, body: Mapping[str, Any]) -> tuple[list[Obj], str | None]:
        """The items before this request's input, and the conversation it belongs to."""
        conversation, previous = body.get("conversation"), body.get("previous_response_id")
        if conversation and previous:
            raise ApiError(400, "Mutually exclusive parameters: 'conversation' and 'previous_response_id'.",
                           param="conversation")
        if conversation:
            if not self.conversations_enabled:
                raise ApiError(400, "Unsupported parameter: 'conversation'.", param="conversation")
            conversation_id = conversation if isinstance(conversation, str) else str(conversation.get("id"))
            return list(self.conversation(conversation_id).items), conversation_id
        if previous:
            prior = self.stored.get(str(previous))
            if prior is None:
                raise ApiError(400, f"Previous response with id '{previous}' not found.",
                               param="previous_response_id", code="previous_response_not_found")
            return prior.context + prior.obj["output"], None
        return [], None

    def _directives(self, context: list[Obj], latest: str) -> script.Directives:
        """The latest user message's directives; ``!drop`` cuts the stream once per message (a
        transient failure: a request sent again for the same message streams in full)."""
        directives = script.parse_directives(latest)
        if directives.drop:
            position = (latest, len(rw.user_texts(context)))
            if position in self._dropped:
                return replace(directives, drop=False)
            self._dropped.add(position)
        return directives

    def _reply(self, body: Mapping[str, Any], context: list[Obj], latest: str) -> script.Reply:
        tools = body.get("tools") or []
        functions = set() if body.get("tool_choice") == "none" else rw.function_names(tools)
        outputs = _trailing_outputs(context)
        if not outputs:
            return script.reply_to(latest, user_messages=len(rw.user_texts(context)), functions=functions)
        if self.repeat_tool_calls:
            answered = {o["call_id"] for o in outputs}
            calls = [i for i in context if i.get("type") == "function_call" and i["call_id"] in answered]
            return script.Reply(calls=tuple(script.PlannedCall(c["name"], c["arguments"]) for c in calls))
        return script.Reply(text=script.reply_to_outputs([str(o.get("output", "")) for o in outputs]))


def _trailing_outputs(context: list[Obj]) -> list[Obj]:
    """The function call outputs that end the context (the request answers tool calls)."""
    tail: list[Obj] = []
    for item in reversed(context):
        if item.get("type") != "function_call_output":
            break
        tail.append(item)
    return tail[::-1]


def _check_tool_outputs(context: list[Obj]) -> None:
    """OpenAI's rules: every function call has an output, every output answers a call."""
    calls = [i["call_id"] for i in context if i.get("type") == "function_call"]
    outputs = [i["call_id"] for i in context if i.get("type") == "function_call_output"]
    for call_id in outputs:
        if call_id not in calls:
            raise ApiError(400, f"No tool call found for function call output with call_id {call_id}.",
                           param="input")
    for call_id in calls:
        if call_id not in outputs:
            raise ApiError(400, f"No tool output found for function call {call_id}.", param="input")


def _check_http_directive(new_items: list[Obj]) -> None:
    """``!http=<status>`` in the request's newest user message answers that status."""
    texts = rw.user_texts(new_items)
    status = script.parse_directives(texts[-1]).http_status if texts else None
    if status is not None:
        raise wire.error_for_status(status)
