"""OpenAI request bodies (chat and legacy completions) parsed into typed, validated values.

Validation happens here, once, with the OpenAI parameter path in every refusal (``param`` of the
error envelope, e.g. ``messages[2].content[0].type``), so that SDK users see which field was
wrong. Fields the route cannot honour are refused by name, never dropped. Unknown top-level
fields are ignored, as OpenAI-compatible servers (vLLM, Triton's frontend) do; known fields that
change nothing about the generated text (``user``, ``metadata``, ``store``, ``service_tier``,
``safety_identifier``, ``prompt_cache_key``, ``parallel_tool_calls``, ``reasoning_effort``,
``verbosity``, ``prediction``, ``stream_options.include_obfuscation``) are ignored too.

All user text passes through the route's ``Sanitizer`` here, where the param path is known.

The per-request values are frozen ``msgspec.Struct`` classes rather than frozen dataclasses: a
frozen dataclass sets each field through ``object.__setattr__``, which made building the
messages and the sampling of the bench's 1 KB chat cost 5 us (1 us with Structs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional

import msgspec
import orjson

from .errors import OpenAIError, invalid
from .sanitize import Sanitizer

Role = Literal["system", "user", "assistant", "tool"]

ROLES: dict[str, Role] = {
    "system": "system", "developer": "system", "user": "user", "assistant": "assistant",
    "tool": "tool",
}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ToolCall(msgspec.Struct, frozen=True):
    """An assistant's earlier tool call; ``arguments`` is the decoded JSON object."""

    id: str
    name: str
    arguments: Any


class Message(msgspec.Struct, frozen=True):
    """One chat message; ``developer`` arrives here as ``system``."""

    role: Role
    content: str
    name: Optional[str] = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: Optional[str] = None


class Sampling(msgspec.Struct, frozen=True):
    """Generation settings, already defaulted and capped by the route."""

    max_tokens: int
    n: int = 1
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    seed: Optional[int] = None
    stop: tuple[str, ...] = ()


class ChatRequest(msgspec.Struct, frozen=True):
    model: Optional[str]
    messages: tuple[Message, ...]
    sampling: Sampling
    stream: bool
    include_usage: bool
    tools: Optional[list[Any]]
    """Sanitised OpenAI tool objects, or None (also when ``tool_choice`` is ``"none"``)."""


class CompletionRequest(msgspec.Struct, frozen=True):
    model: Optional[str]
    prompt: str
    sampling: Sampling
    stream: bool
    include_usage: bool


@dataclass(frozen=True, slots=True)
class Policy:
    """What the route allows; built once per conf."""

    sanitizer: Sanitizer
    max_messages: int
    max_tokens_default: int
    max_tokens_cap: int
    max_n: int
    """1 unless the backend can return several choices (vLLM)."""
    tools: bool
    """The template can render tool definitions and tool calls."""
    tool_role: bool
    """The template can render ``tool`` messages (as a turn of their own)."""
    backend: str
    template: str


def load_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the 400 OpenAI gives for an unparsable body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid("We could not parse the JSON body of your request. The body must be a "
                      "JSON object (see https://platform.openai.com/docs/api-reference).",
                      None, "invalid_json") from None
    if not isinstance(doc, dict):
        raise invalid(f"The request body must be a JSON object, not {_kind(doc)}.",
                      None, "invalid_json")
    return doc


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _type_error(param: str, expected: str, value: object) -> OpenAIError:
    return invalid(f"Invalid type for '{param}': expected {expected}, but got {_kind(value)}.",
                   param, "invalid_type")


def _str(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise _type_error(param, "a string", value)
    return value


def _opt_bool(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _type_error(key, "a boolean", value)
    return value


def _opt_number(doc: dict[str, Any], key: str, low: float, high: float) -> Optional[float]:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(key, "a number", value)
    if not low <= value <= high:
        raise invalid(f"Invalid '{key}': {value} is out of range; it must be between "
                      f"{low:g} and {high:g}.", key, "invalid_value")
    return float(value)


def _opt_int(doc: dict[str, Any], key: str, low: int, high: int) -> Optional[int]:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(key, "an integer", value)
    if not low <= value <= high:
        raise invalid(f"Invalid '{key}': {value} is out of range; it must be between "
                      f"{low} and {high}.", key, "invalid_value")
    return value


def _unsupported(param: str, what: str) -> OpenAIError:
    return invalid(f"'{param}' is not supported on this route: {what}.", param, "unsupported_parameter")


def _refuse_set(doc: dict[str, Any], key: str, what: str,
                allowed: Callable[[Any], bool] = lambda v: v is None) -> None:
    if key in doc and not allowed(doc[key]):
        raise _unsupported(key, what)


def _sampling(doc: dict[str, Any], policy: Policy, chat: bool) -> Sampling:
    requested = None
    for key in (("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)):
        requested = _opt_int(doc, key, 1, INT64_MAX)
        if requested is not None:
            break
    max_tokens = policy.max_tokens_default if requested is None else requested
    n = _opt_int(doc, "n", 1, 128) or 1
    if n > policy.max_n:
        raise _unsupported("n", f"the {policy.backend} backend returns one choice per request "
                                "(n must be 1)")
    seed = _opt_int(doc, "seed", INT64_MIN, INT64_MAX)
    return Sampling(
        max_tokens=min(max_tokens, policy.max_tokens_cap),
        n=n,
        temperature=_opt_number(doc, "temperature", 0, 2),
        top_p=_opt_number(doc, "top_p", 0, 1),
        presence_penalty=_opt_number(doc, "presence_penalty", -2, 2),
        frequency_penalty=_opt_number(doc, "frequency_penalty", -2, 2),
        seed=seed,
        stop=_stop(doc.get("stop")),
    )


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise _type_error("stop", "a string or an array of strings", value)
    if len(items) > 4:
        raise invalid(f"Invalid 'stop': {len(items)} sequences given; at most 4 are allowed.",
                      "stop", "invalid_value")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _type_error(f"stop[{i}]", "a string", item)
        if not item:
            raise invalid("Invalid 'stop': a stop sequence cannot be empty.", f"stop[{i}]",
                          "invalid_value")
    return tuple(items)  # type: ignore[arg-type]


def _stream(doc: dict[str, Any]) -> tuple[bool, bool]:
    stream = _opt_bool(doc, "stream")
    options = doc.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise _type_error("stream_options", "an object", options)
    if not stream:
        raise invalid("The 'stream_options' parameter is only allowed when 'stream' is true.",
                      "stream_options", "invalid_value")
    usage = options.get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise _type_error("stream_options.include_usage", "a boolean", usage)
    return stream, bool(usage)


def _model(doc: dict[str, Any]) -> Optional[str]:
    model = doc.get("model")
    if model is None or model == "":
        return None
    return _str(model, "model")


def _common_refusals(doc: dict[str, Any]) -> None:
    _refuse_set(doc, "logit_bias", "logit_bias cannot be mapped to the model's token ids",
                lambda v: v is None or v == {})


def _text_of(content: object, param: str, role: str, clean: Sanitizer) -> str:
    if isinstance(content, str):
        return clean.clean(content, param)
    if not isinstance(content, list):
        raise _type_error(param, "a string or an array of content parts", content)
    texts: list[str] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _type_error(where, "an object", part)
        kind = part.get("type")
        if kind == "text" or (kind == "refusal" and role == "assistant"):
            key = "text" if kind == "text" else "refusal"
            texts.append(clean.clean(_str(part.get(key), f"{where}.{key}"), f"{where}.{key}"))
        elif isinstance(kind, str):
            raise invalid(f"Content part type '{kind[:64]}' is not supported on this route; only "
                          "'text' parts are.", f"{where}.type", "unsupported_content")
        else:
            raise _type_error(f"{where}.type", "a string", kind)
    # Parts are joined the way vLLM joins them for a text-only model.
    return "\n".join(texts)


def _tool_calls(value: object, param: str, policy: Policy) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _type_error(param, "an array", value)
    if value and not policy.tools:
        raise _unsupported(param, f"the {policy.template} template cannot render tool calls")
    clean = policy.sanitizer
    calls = []
    for k, call in enumerate(value):
        where = f"{param}[{k}]"
        if not isinstance(call, dict):
            raise _type_error(where, "an object", call)
        kind = call.get("type", "function")
        if kind != "function":
            raise invalid(f"Tool call type {kind!r:.64} is not supported; only 'function' is.",
                          f"{where}.type", "unsupported_value")
        function = call.get("function")
        if not isinstance(function, dict):
            raise _type_error(f"{where}.function", "an object", function)
        name = clean.clean(_str(function.get("name"), f"{where}.function.name"),
                           f"{where}.function.name")
        raw_args = _str(function.get("arguments"), f"{where}.function.arguments")
        try:
            arguments = orjson.loads(raw_args) if raw_args.strip() else {}
        except orjson.JSONDecodeError:
            raise invalid("Tool call arguments must be a JSON-encoded string.",
                          f"{where}.function.arguments", "invalid_value") from None
        call_id = call.get("id")
        calls.append(ToolCall(
            id="" if call_id is None else _str(call_id, f"{where}.id"),
            name=name,
            arguments=clean.clean_json(arguments, f"{where}.function.arguments"),
        ))
    return tuple(calls)


def _messages(value: object, policy: Policy) -> tuple[Message, ...]:
    if value is None:
        raise invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(value, list):
        raise _type_error("messages", "an array", value)
    if not value:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum length 1.",
                      "messages", "empty_array")
    if len(value) > policy.max_messages:
        raise invalid(f"Invalid 'messages': {len(value)} messages given; this route accepts at "
                      f"most {policy.max_messages}.", "messages", "array_above_max_length")
    clean = policy.sanitizer
    out = []
    for i, raw in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(raw, dict):
            raise _type_error(where, "an object", raw)
        role_name = raw.get("role")
        if not isinstance(role_name, str):
            if role_name is None:
                raise invalid(f"Missing required parameter: '{where}.role'.", f"{where}.role",
                              "missing_required_parameter")
            raise _type_error(f"{where}.role", "a string", role_name)
        role = ROLES.get(role_name)
        if role is None:
            hint = " ('function' is deprecated: use 'tool')" if role_name == "function" else ""
            raise invalid(f"Invalid value for '{where}.role': {role_name[:64]!r}{hint}. Supported "
                          "values are: 'system', 'developer', 'user', 'assistant' and 'tool'.",
                          f"{where}.role", "invalid_value")
        if role == "tool" and not policy.tool_role:
            raise _unsupported(f"{where}.role", f"the {policy.template} template has no tool role")
        content = raw.get("content")
        tool_calls: tuple[ToolCall, ...] = ()
        if role == "assistant":
            tool_calls = _tool_calls(raw.get("tool_calls"), f"{where}.tool_calls", policy)
            text = "" if content is None else _text_of(content, f"{where}.content", role, clean)
        elif content is None:
            raise invalid(f"Missing required parameter: '{where}.content'.", f"{where}.content",
                          "missing_required_parameter")
        else:
            text = _text_of(content, f"{where}.content", role, clean)
        name = raw.get("name")
        if name is not None:
            name = clean.clean(_str(name, f"{where}.name"), f"{where}.name")
        tool_call_id = None
        if role == "tool":
            tool_call_id = _str(raw.get("tool_call_id"), f"{where}.tool_call_id")
        out.append(Message(role, text, name, tool_calls, tool_call_id))
    return tuple(out)


def _tools(doc: dict[str, Any], policy: Policy) -> Optional[list[Any]]:
    tools = doc.get("tools")
    choice = doc.get("tool_choice")
    if choice is not None and choice not in ("none", "auto"):
        if isinstance(choice, (str, dict)):
            raise _unsupported("tool_choice", "only 'auto' and 'none' can be honoured by a "
                                              "prompt template")
        raise _type_error("tool_choice", "a string or an object", choice)
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise _type_error("tools", "an array", tools)
    if not policy.tools:
        raise _unsupported("tools", f"the {policy.template} template has no tool support (use "
                                    "llama3.1 or a chat_template)")
    for k, tool in enumerate(tools):
        where = f"tools[{k}]"
        if not isinstance(tool, dict):
            raise _type_error(where, "an object", tool)
        if tool.get("type") != "function":
            raise invalid(f"Invalid '{where}.type': only 'function' tools are supported.",
                          f"{where}.type", "unsupported_value")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _type_error(f"{where}.function", "an object", function)
        _str(function.get("name"), f"{where}.function.name")
    if choice == "none":
        return None
    cleaned = policy.sanitizer.clean_json(tools, "tools")
    assert isinstance(cleaned, list)
    return cleaned


def _response_format(doc: dict[str, Any]) -> None:
    value = doc.get("response_format")
    if value is None:
        return
    if not isinstance(value, dict):
        raise _type_error("response_format", "an object", value)
    kind = value.get("type")
    if kind != "text":
        raise _unsupported("response_format", f"type {kind!r:.64} needs guided decoding, "
                                              "which this route does not configure")


def parse_chat(doc: dict[str, Any], policy: Policy) -> ChatRequest:
    """A validated chat request, or an ``OpenAIError`` naming the offending field."""
    model = _model(doc)
    messages = _messages(doc.get("messages"), policy)
    _common_refusals(doc)
    _refuse_set(doc, "logprobs", "log probabilities are not returned", lambda v: v in (None, False))
    _refuse_set(doc, "top_logprobs", "log probabilities are not returned", lambda v: v in (None, 0))
    _refuse_set(doc, "functions", "deprecated; use 'tools'", lambda v: v in (None, []))
    _refuse_set(doc, "function_call", "deprecated; use 'tool_choice'", lambda v: v in (None, "none"))
    _refuse_set(doc, "audio", "audio output is not available")
    _refuse_set(doc, "modalities", "only text output is available",
                lambda v: v is None or v == ["text"])
    _refuse_set(doc, "web_search_options", "web search is not available")
    _response_format(doc)
    tools = _tools(doc, policy)
    stream, include_usage = _stream(doc)
    return ChatRequest(model, messages, _sampling(doc, policy, True), stream, include_usage, tools)


def parse_completion(doc: dict[str, Any], policy: Policy) -> CompletionRequest:
    """A validated legacy completions request (one prompt)."""
    model = _model(doc)
    prompt = doc.get("prompt")
    if prompt is None:
        raise invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if isinstance(prompt, list):
        if prompt and all(isinstance(p, (int, list)) and not isinstance(p, bool) for p in prompt):
            raise _unsupported("prompt", "token-id prompts cannot be sent to a text model "
                                         "endpoint; send text")
        if len(prompt) != 1:
            raise _unsupported("prompt", "send exactly one prompt per request")
        prompt = _str(prompt[0], "prompt[0]")
        param = "prompt[0]"
    else:
        param = "prompt"
        prompt = _str(prompt, "prompt")
    text = policy.sanitizer.clean(prompt, param)
    _common_refusals(doc)
    _refuse_set(doc, "logprobs", "log probabilities are not returned", lambda v: v in (None, 0))
    _refuse_set(doc, "echo", "the prompt is never echoed", lambda v: v in (None, False))
    _refuse_set(doc, "best_of", "best_of needs server-side ranking", lambda v: v in (None, 1))
    _refuse_set(doc, "suffix", "insertion (suffix) is not available", lambda v: v in (None, ""))
    stream, include_usage = _stream(doc)
    return CompletionRequest(model, text, _sampling(doc, policy, False), stream, include_usage)
