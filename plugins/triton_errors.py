"""Which OpenAI error a client gets for a Triton failure, and what the operator's log says.

The client always gets the OpenAI envelope with a status its SDK maps to the right exception;
it never sees Triton's raw body. Triton's 4xx messages describe the request and may be passed on
(conf ``expose_upstream_errors``); 5xx messages can describe the server's internals and are not.
"""

from __future__ import annotations

import logging
from .errors import OpenAIError
from .triton_response import error_message

log = logging.getLogger(__name__)

#: How much of an upstream error body goes into the log (error bodies are not prompt text).
LOG_BODY_BYTES = 200
_MAX_MESSAGE_CHARS = 1000


def server_error(message: str) -> OpenAIError:
    """502 ``server_error``: the inference server failed, not the client."""
    return OpenAIError(502, message, "server_error")


def upstream_status_error(
    status: int, body: bytes, model: str, request_id: str, expose: bool
) -> OpenAIError:
    """The OpenAI error for a non-200 Triton answer; logs the status and the body's first bytes."""
    log.warning("%s: Triton answered HTTP %d (%d bytes): %r",
                request_id, status, len(body), body[:LOG_BODY_BYTES])
    message = error_message(body)
    if status == 429:
        return OpenAIError(429, "The inference server is rate limiting requests; retry later",
                           "rate_limit_error", None, "rate_limit_exceeded")
    if message is None:
        return server_error(f"The inference server returned an unreadable answer (HTTP {status})")
    if status == 404:
        return OpenAIError(404, f"The model '{model}' does not exist or is not being served",
                           "invalid_request_error", "model", "model_not_found")
    if status in (400, 413, 422):
        text = _detail(message, expose)
        if status == 413:
            return OpenAIError(413, f"The request is too large for the inference server{text}",
                               "invalid_request_error", None, "content_too_large")
        return OpenAIError(400, f"The inference server refused the request{text}",
                           "invalid_request_error")
    return server_error(f"The inference server failed (HTTP {status})")


def _detail(message: str, expose: bool) -> str:
    if not expose:
        return ""
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + "..."
    return ": " + message


def broken_reply_error(request_id: str, reason: str, upstream: bool = False) -> OpenAIError:
    """The 502 for a 200 answer that cannot be used; logs the reason, never the 200 body."""
    if upstream:
        log.warning("%s: Triton reported an error during generation: %r",
                    request_id, reason[:LOG_BODY_BYTES])
        return server_error("The inference server failed during generation")
    log.warning("%s: unusable answer from Triton: %s", request_id, reason)
    return server_error("The inference server returned an answer that could not be read")
