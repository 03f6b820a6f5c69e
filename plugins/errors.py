"""The OpenAI error envelope, the one error shape an OpenAI client understands.

Every refusal either plugin makes reaches the client as ``{"error": {message, type, param,
code}}`` with the status OpenAI would use, so SDKs raise their usual exception classes.
"""

from __future__ import annotations

from typing import Optional

import orjson

JSON_HEADERS: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


class OpenAIError(Exception):
    """A refusal, in the caller's terms. Raise it from the pure code; the plugin answers it."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: Optional[str] = None,
        code: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def envelope(self) -> dict[str, dict[str, Optional[str]]]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


def invalid(message: str, param: Optional[str] = None, code: Optional[str] = None) -> OpenAIError:
    """400 ``invalid_request_error``, the commonest refusal."""
    return OpenAIError(400, message, "invalid_request_error", param, code)
