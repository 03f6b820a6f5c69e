"""Building the OpenAI answer: ``chat.completion``, ``text_completion`` and their SSE stream form.

Stream chunks differ only in the choice part, so each stream's fixed prefix (id, object, created,
model) is encoded once and the chunks are joined as bytes: a 500-event stream costs one small
``orjson.dumps`` per delta instead of one per chunk dictionary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import orjson

from .errors import OpenAIError
from .state import CallState
from .usage import Usage

DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class Choice:
    """One finished choice: its text and why it ended."""

    text: str
    finish_reason: str


def completion_body(state: CallState, choices: Sequence[Choice], usage: Optional[Usage]) -> bytes:
    """The non-stream answer, ``chat.completion`` or ``text_completion`` by endpoint."""
    out: dict[str, Any]
    if state.endpoint == "chat":
        out = {
            "id": state.id,
            "object": "chat.completion",
            "created": state.created,
            "model": state.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(choices)
            ],
        }
    else:
        out = {
            "id": state.id,
            "object": "text_completion",
            "created": state.created,
            "model": state.model,
            "choices": [
                {"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                for i, c in enumerate(choices)
            ],
        }
    if usage is not None:
        out["usage"] = usage.as_dict()
    return orjson.dumps(out)


def error_event(error: OpenAIError) -> bytes:
    """An error in the middle of a stream, as the OpenAI SDKs expect it (they raise APIError)."""
    return b"data: " + error.body() + b"\n\n"


class StreamWriter:
    """Accumulates the chunks of one OpenAI stream; ``body()`` joins them."""

    __slots__ = ("_chat", "_prefix", "_tail", "_parts", "_index", "_delta_heads", "_delta_tail")

    def __init__(self, state: CallState) -> None:
        self._chat = state.endpoint == "chat"
        obj = b"chat.completion.chunk" if self._chat else b"text_completion"
        self._prefix = b"".join((
            b'data: {"id":', orjson.dumps(state.id), b',"object":"', obj,
            b'","created":', str(int(state.created)).encode(),
            b',"model":', orjson.dumps(state.model), b',"choices":[',
        ))
        # With include_usage, OpenAI gives every chunk but the last a null usage.
        self._tail = b'],"usage":null}\n\n' if state.include_usage else b"]}\n\n"
        self._parts: list[bytes] = []
        self._index: list[bytes] = []
        # A delta chunk is head + JSON text + tail: joined once per choice, not per event.
        self._delta_heads: list[bytes] = []
        self._delta_tail = (b'},"logprobs":null,"finish_reason":null}' if self._chat
                            else b',"logprobs":null,"finish_reason":null}') + self._tail

    def _choice(self, index: int) -> bytes:
        """``{"index":N`` for a choice, encoded once per stream."""
        while len(self._index) <= index:
            self._index.append(b'{"index":' + str(len(self._index)).encode())
        return self._index[index]

    def start(self, index: int) -> None:
        """The first chunk of a chat choice: the assistant role (completions have none)."""
        if self._chat:
            self._parts += (
                self._prefix, self._choice(index),
                b',"delta":{"role":"assistant","content":""},"logprobs":null,'
                b'"finish_reason":null}', self._tail,
            )

    def delta(self, index: int, text: str) -> None:
        """One piece of a choice's text."""
        heads = self._delta_heads
        while len(heads) <= index:
            heads.append(self._prefix + self._choice(len(heads))
                         + (b',"delta":{"content":' if self._chat else b',"text":'))
        self._parts += (heads[index], orjson.dumps(text), self._delta_tail)

    def finish(self, index: int, reason: str) -> None:
        """The last chunk of a choice, with its finish_reason and an empty delta."""
        body = b',"delta":{}' if self._chat else b',"text":""'
        self._parts += (
            self._prefix, self._choice(index), body,
            b',"logprobs":null,"finish_reason":', orjson.dumps(reason), b"}", self._tail,
        )

    def usage(self, usage: Usage) -> None:
        """The usage chunk (``choices: []``) that ``stream_options.include_usage`` asks for."""
        self._parts += (self._prefix, b'],"usage":', orjson.dumps(usage.as_dict()), b"}\n\n")

    def error(self, error: OpenAIError) -> None:
        self._parts.append(error_event(error))

    def body(self) -> bytes:
        """The whole stream, always ended by ``data: [DONE]``."""
        return b"".join(self._parts) + DONE
