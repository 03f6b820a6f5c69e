"""What an OpenAI client accepts, checked with the ``openai`` SDK's own types."""

from __future__ import annotations

import json
from typing import Any, Optional

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject


def check_error_envelope(body: bytes) -> ErrorObject:
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    assert set(doc["error"]) == {"message", "type", "param", "code"}, doc
    error = ErrorObject.model_validate(doc["error"])
    assert error.message and error.type
    return error


def check_client_answer(status: int, headers: list[tuple[str, str]], body: bytes,
                        stream: bool) -> Optional[str]:
    """A whole, valid OpenAI answer: a completion, a complete event stream, or an error
    envelope. Returns the completion text (``None`` for an error)."""
    content_type = next((v for k, v in headers if k == "content-type"), None)
    if status != 200:
        assert content_type == "application/json"
        check_error_envelope(body)
        return None
    if not stream:
        assert content_type == "application/json"
        completion = ChatCompletion.model_validate(json.loads(body))
        return completion.choices[0].message.content or ""
    assert content_type == "text/event-stream"
    text = body.decode("utf-8")
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events[:3]
    out = []
    errored = False
    for event in events[:-1]:
        doc: Any = json.loads(event[len("data: "):])
        if "error" in doc:
            check_error_envelope(json.dumps(doc).encode())
            errored = True
            continue
        assert not errored, "an event after the error event"
        chunk = ChatCompletionChunk.model_validate(doc)
        for choice in chunk.choices:
            out.append(choice.delta.content or "")
    return None if errored else "".join(out)
