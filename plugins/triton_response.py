"""Reading what Triton answered: generate JSON, generate_stream SSE, KServe v2 infer JSON, errors.

Every shape is reduced to a list of ``TritonEvent`` (one per Triton response; generate and infer
have exactly one), so the OpenAI side is built the same way whatever the endpoint was. Nothing
here raises on bad input: a body that is not what the endpoint returns ends in ``failure``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import msgspec
import orjson


class TritonEvent(msgspec.Struct):
    """The facts of one Triton response that an OpenAI answer needs.

    A Struct rather than a dataclass: a 500-event stream builds 500 of them, and the Struct's
    C ``__init__`` made ``parse_stream`` of the bench's sse500 answer 751 us instead of 820 us.
    """

    #: ``text_output``, one element per choice (vLLM returns ``n`` of them).
    texts: list[str]
    #: vLLM ``finish_reason`` per choice; None when absent or the ``"None"`` of a partial chunk.
    finish: Sequence[Optional[str]] = ()
    #: ``num_input_tokens`` when it is a real count.
    input_tokens: Optional[int] = None
    #: ``num_output_tokens`` per choice (or one total) when returned as integers.
    output_tokens: Optional[list[int]] = None
    #: Parsed by the lenient decoder: ``texts`` may hold surrogate-escaped raw bytes.
    dirty: bool = False


@dataclass(slots=True)
class TritonReply:
    """The usable events, and why the reply stops being usable, if it does."""

    events: list[TritonEvent]
    #: Set when the body (or the stream after ``events``) is unusable; for the log, not the client.
    failure: Optional[str] = None
    #: True when ``failure`` is an error Triton reported (``{"error": ...}``), not a broken body.
    upstream_error: bool = False


# --- JSON ---------------------------------------------------------------------------------------


class _Outputs(msgspec.Struct):
    """The outputs an answer needs, decoded in C; every other key is skipped unread."""

    text_output: Union[str, list[Any], None] = None
    finish_reason: Union[str, list[Any], None] = None
    num_input_tokens: Union[int, float, list[Any], None] = None
    num_output_tokens: Union[int, float, list[Any], None] = None
    error: Any = None


_one_answer = msgspec.json.Decoder(_Outputs)
_many_answers = msgspec.json.Decoder(list[_Outputs])


def _loads(data: bytes) -> tuple[Any, bool]:
    """Decode JSON; fall back to a decoder that keeps invalid UTF-8 and lone surrogates.

    Returns the value and whether the fallback was needed. Raises ``ValueError`` when the data
    is not JSON at all.
    """
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data.decode("utf-8", "surrogateescape")), True
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None


def _flatten(value: Any) -> list[Any]:
    """A flat element list from a scalar, a flat array, or a row-major nested array."""
    if not isinstance(value, list):
        return [value]
    if not any(isinstance(v, list) for v in value):
        return value
    out: list[Any] = []
    stack = [iter(value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _ints(value: Any) -> Optional[list[int]]:
    """Integer counts, or None for anything else (TRT-LLM sends ``0.0`` for unrequested outputs)."""
    if type(value) is int:
        return [value] if value >= 0 else None
    items = _flatten(value)
    if not items or not all(type(v) is int and v >= 0 for v in items):
        return None
    return items


def event_from_outputs(outputs: dict[str, Any], dirty: bool) -> TritonEvent:
    """One event from Triton's output tensors by name (generate's flat keys, or infer's outputs).

    Raises ``ValueError`` when ``text_output`` is missing or not text.
    """
    return _event(outputs.get("text_output"), outputs.get("finish_reason"),
                  outputs.get("num_input_tokens"), outputs.get("num_output_tokens"), dirty)


def _event(text: Any, finish: Any, inputs: Any, outputs: Any, dirty: bool) -> TritonEvent:
    if type(text) is str:  # the common case first: one choice
        texts = [text]
    elif text is None:
        raise ValueError("no text_output in the answer")
    else:
        texts = _flatten(text)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("text_output is not text")
    event = TritonEvent(texts, dirty=dirty)
    if finish is not None:
        event.finish = [f if type(f) is str and f != "None" else None for f in _flatten(finish)]
    if inputs is not None:
        counts = _ints(inputs)
        if counts and counts[0] > 0:  # a prompt has at least one token: 0 is a placeholder
            event.input_tokens = counts[0]
    if outputs is not None:
        event.output_tokens = _ints(outputs)
    return event


def _fast_event(outputs: _Outputs) -> TritonEvent:
    text, finish = outputs.text_output, outputs.finish_reason
    inputs, counts = outputs.num_input_tokens, outputs.num_output_tokens
    # One choice with scalar outputs is nearly every event of a stream: build it directly.
    if (type(text) is str and (finish is None or type(finish) is str)
            and (inputs is None or type(inputs) is int) and (counts is None or type(counts) is int)):
        return TritonEvent(
            [text],
            () if finish is None else (None if finish == "None" else finish,),
            inputs if inputs is not None and inputs > 0 else None,
            [counts] if counts is not None and counts >= 0 else None,
        )
    return _event(text, finish, inputs, counts, False)


def _error_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return str(value["message"])
    return "unknown error"


def parse_generate(body: bytes) -> TritonReply:
    """The answer of ``/generate``: one flat object of outputs and parameters."""
    try:
        fast = _one_answer.decode(body)
    except (ValueError, msgspec.DecodeError, RecursionError):
        pass  # not clean JSON of the usual types: the slow path below says what is wrong
    else:
        if fast.error is None and fast.text_output is not None:
            try:
                return TritonReply([_fast_event(fast)])
            except ValueError:
                pass
    try:
        data, dirty = _loads(body)
    except ValueError:
        return TritonReply([], "the generate answer is not JSON")
    if not isinstance(data, dict):
        return TritonReply([], "the generate answer is not a JSON object")
    if data.get("error") is not None:
        return TritonReply([], _error_text(data["error"]), upstream_error=True)
    try:
        return TritonReply([event_from_outputs(data, dirty)])
    except ValueError as exc:
        return TritonReply([], f"the generate answer has {exc}")


def parse_infer(body: bytes) -> TritonReply:
    """The answer of KServe v2 ``/infer``: ``outputs`` is a list of named tensors."""
    try:
        data, dirty = _loads(body)
    except ValueError:
        return TritonReply([], "the infer answer is not JSON")
    if not isinstance(data, dict):
        return TritonReply([], "the infer answer is not a JSON object")
    if data.get("error") is not None:
        return TritonReply([], _error_text(data["error"]), upstream_error=True)
    outputs = data.get("outputs")
    if not isinstance(outputs, list):
        return TritonReply([], "the infer answer has no outputs list")
    tensors: dict[str, Any] = {}
    for tensor in outputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            return TritonReply([], "the infer answer has an output that is not a named tensor")
        if "data" not in tensor:
            return TritonReply([], f"the infer output {tensor['name'][:64]!r} has no JSON data "
                                   "(binary tensor data is not supported)")
        tensors[tensor["name"]] = tensor["data"]
    try:
        return TritonReply([event_from_outputs(tensors, dirty)])
    except ValueError as exc:
        return TritonReply([], f"the infer answer has {exc}")


# --- server-sent events -------------------------------------------------------------------------


def _event_data(block: bytes) -> Optional[bytes]:
    """The ``data`` of one SSE event block (several data lines joined by newlines)."""
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]
    lines = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
        # Comments (":...") and other fields (event, id, retry) carry nothing Triton uses.
    return b"\n".join(lines) if lines else None


def parse_stream(body: bytes) -> TritonReply:
    """The answer of ``/generate_stream``: ``data: <json>`` events, no terminator.

    The gateway buffered the whole stream, so it is complete here unless it was cut: an event
    not closed by a blank line, or one whose JSON does not parse, ends the usable part.
    An ``{"error": ...}`` event (Triton keeps status 200 once streaming) ends it too.
    """
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    blocks = body.split(b"\n\n")
    tail = blocks.pop()  # what follows the last blank line: empty unless the stream was cut
    payloads = []
    for block in blocks:
        data = _event_data(block)
        if data is None:
            continue
        if data == b"[DONE]":
            tail = b""
            break
        payloads.append(data)
    cut = "the stream was cut in the middle of an event" if tail.strip() else None
    try:
        # All events in one C-level decode: a 500-event stream is one call, not 500.
        fast = _many_answers.decode(b"[" + b",".join(payloads) + b"]")
    except (ValueError, msgspec.DecodeError, RecursionError):
        return _parse_events(payloads, cut)
    events = []
    for outputs in fast:
        if outputs.error is not None or outputs.text_output is None:
            return _parse_events(payloads, cut)
        try:
            events.append(_fast_event(outputs))
        except ValueError:
            return _parse_events(payloads, cut)
    return TritonReply(events, cut)


def _parse_events(payloads: list[bytes], cut: Optional[str]) -> TritonReply:
    """One event at a time, leniently: finds where a stream stops being usable, and why."""
    events: list[TritonEvent] = []
    for data in payloads:
        try:
            payload, dirty = _loads(data)
        except ValueError:
            return TritonReply(events, f"stream event {len(events) + 1} is not JSON")
        if not isinstance(payload, dict):
            return TritonReply(events, f"stream event {len(events) + 1} is not a JSON object")
        if payload.get("error") is not None:
            return TritonReply(events, _error_text(payload["error"]), upstream_error=True)
        try:
            events.append(event_from_outputs(payload, dirty))
        except ValueError as exc:
            return TritonReply(events, f"stream event {len(events) + 1} has {exc}")
    return TritonReply(events, cut)


def parse_reply(api: str, body: bytes) -> TritonReply:
    """Dispatch on the Triton API the request plugin called."""
    if api == "generate_stream":
        return parse_stream(body)
    if api == "infer":
        return parse_infer(body)
    return parse_generate(body)


def error_message(body: bytes) -> Optional[str]:
    """Triton's message from an error body ``{"error": "..."}``, or None if it is not one.

    generate_stream answers a failure of the model's first response with the error status and
    the error as the only event (``data: {"error": ...}``), so that form is read too.
    """
    stripped = body.strip()
    if stripped.startswith(b"data:"):
        stripped = stripped[5:].split(b"\n", 1)[0]
    try:
        data = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or "error" not in data:
        return None
    return _error_text(data["error"])
