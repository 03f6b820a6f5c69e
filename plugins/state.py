"""What the request phase tells the response phase, carried in one request header.

The response plugin needs facts only the request plugin knew (the model name the client used,
streaming, the max tokens sent, stop sequences...). The gateway keeps no per-request store an
external plugin can write, so the request plugin sets a header on the upstream request and the
response plugin reads it back through the ``http_<name>`` variable.

A client could send that header itself. The request plugin always overwrites it, and the value is
signed with a key drawn when the runner process starts (before worker processes fork, so every
worker shares it): a forged or stale value is refused, not trusted, even on a route that has only
the response plugin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Literal

import msgspec

STATE_HEADER = "x-openai-triton-state"
"""The request header that carries the state (documented in README)."""

STATE_VAR = "http_" + STATE_HEADER.replace("-", "_")
"""The gateway variable through which the response plugin reads it."""

_KEY = secrets.token_bytes(32)
_MAC_LEN = 16

Endpoint = Literal["chat", "completions"]
Api = Literal["generate", "generate_stream", "infer"]


class CallState(msgspec.Struct, array_like=True, frozen=True):
    """One request's facts, as the response phase needs them."""

    model: str
    endpoint: Endpoint
    id: str
    created: int
    stream: bool
    include_usage: bool
    n: int
    max_tokens: int
    backend: str
    api: Api
    stop: tuple[str, ...] = ()
    #: Counted by the request plugin when its conf names a tokenizer and the backend cannot
    #: return counts; the response phase never sees the prompt.
    prompt_tokens: int | None = None


class StateError(ValueError):
    """The header is missing, malformed, or was not signed by this runner."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CallState)


def encode_state(state: CallState) -> str:
    """The header value: URL-safe base64 of the JSON, then of a truncated HMAC-SHA256."""
    payload = _encoder.encode(state)
    mac = hmac.new(_KEY, payload, hashlib.sha256).digest()[:_MAC_LEN]
    return (
        base64.urlsafe_b64encode(payload).decode("ascii")
        + "."
        + base64.urlsafe_b64encode(mac).decode("ascii")
    )


def decode_state(value: str | None) -> CallState:
    """Parse and verify a header value produced by ``encode_state`` in this runner."""
    if not value:
        raise StateError(f"request header {STATE_HEADER} is missing: "
                         "put openai-to-triton in ext-plugin-pre-req on the same route")
    try:
        b64_payload, b64_mac = value.split(".", 1)
        payload = base64.urlsafe_b64decode(b64_payload)
        mac = base64.urlsafe_b64decode(b64_mac)
    except ValueError:
        raise StateError(f"request header {STATE_HEADER} is malformed") from None
    expected = hmac.new(_KEY, payload, hashlib.sha256).digest()[:_MAC_LEN]
    if not hmac.compare_digest(mac, expected):
        raise StateError(f"request header {STATE_HEADER} was not signed by this runner "
                         "(forged, or the runner restarted during the request)")
    try:
        return _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise StateError(f"request header {STATE_HEADER} is invalid: {exc}") from None
