"""The triton-to-openai route conf: strict parsing once per conf, and its JSON Schema.

Everything a response needs from the conf is computed here (the tokenizer loaded, header names
built), so the response filter does no per-request conf work. The smallest conf is ``{}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union

import msgspec

from apisix_openai_triton.runner import ConfError

from .usage import load_tokenizer

if TYPE_CHECKING:  # imported by usage.load_tokenizer when a conf names a tokenizer: ~8 MB of RSS
    from tokenizers import Tokenizer

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 12 * MIB
# The answer travels back to the gateway in one frame of at most 16 MiB; keep room for headers.
MAX_BODY_BYTES_CEILING = 15 * MIB
DEFAULT_USAGE_HEADER_PREFIX = "x-openai-triton"

_HEADER_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class _Fields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tokenizer: Optional[str] = None
    usage_headers: Union[bool, str] = False
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=MAX_BODY_BYTES_CEILING)] = (
        DEFAULT_MAX_BODY_BYTES
    )
    expose_upstream_errors: bool = True


_decoder = msgspec.json.Decoder(_Fields)


@dataclass(frozen=True, slots=True)
class ResponseConf:
    """A parsed conf, ready for every response on its route."""

    tokenizer: Optional[Tokenizer] = None
    #: (prompt, completion, total) header names, or None when usage headers are off.
    usage_headers: Optional[tuple[str, str, str]] = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    expose_upstream_errors: bool = True


def parse_response_conf(raw: str) -> ResponseConf:
    """Validate the route's conf string; ``ConfError`` names the offending key."""
    if not raw.strip() or raw.strip() == "null":
        return ResponseConf()
    try:
        fields = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ConfError(f"triton-to-openai conf: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfError(f"triton-to-openai conf is not valid JSON: {exc}") from None

    tokenizer = None
    if fields.tokenizer is not None:
        try:
            tokenizer = load_tokenizer(fields.tokenizer)
        except ValueError as exc:
            raise ConfError(f"triton-to-openai conf: `tokenizer`: {exc}") from None

    return ResponseConf(
        tokenizer=tokenizer,
        usage_headers=_usage_header_names(fields.usage_headers),
        max_body_bytes=fields.max_body_bytes,
        expose_upstream_errors=fields.expose_upstream_errors,
    )


def _usage_header_names(value: Union[bool, str]) -> Optional[tuple[str, str, str]]:
    if value is False:
        return None
    prefix = DEFAULT_USAGE_HEADER_PREFIX if value is True else str(value).lower().rstrip("-")
    if not _HEADER_PREFIX.match(prefix):
        raise ConfError(
            "triton-to-openai conf: `usage_headers` must be true, false or a header name prefix "
            f"of letters, digits and dashes (got {value!r})"
        )
    return (f"{prefix}-prompt-tokens", f"{prefix}-completion-tokens", f"{prefix}-total-tokens")


CONF_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "triton-to-openai",
    "description": "Turns Triton's generate / generate_stream / infer answer into the OpenAI "
    "response. Use in ext-plugin-post-resp, with openai-to-triton in ext-plugin-pre-req.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tokenizer": {
            "type": "string",
            "description": "Path to a Hugging Face tokenizer.json, loaded once, used to count "
            "completion tokens when the backend returns no counts.",
        },
        "usage_headers": {
            "oneOf": [
                {"type": "boolean"},
                {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"},
            ],
            "default": False,
            "description": "Add <prefix>-prompt-tokens, -completion-tokens and -total-tokens "
            "response headers when usage is known; true uses the prefix "
            f"{DEFAULT_USAGE_HEADER_PREFIX}.",
        },
        "max_body_bytes": {
            "type": "integer",
            "minimum": 1024,
            "maximum": MAX_BODY_BYTES_CEILING,
            "default": DEFAULT_MAX_BODY_BYTES,
            "description": "Largest upstream body, and largest converted body, accepted; "
            "larger ones get a 502 server_error.",
        },
        "expose_upstream_errors": {
            "type": "boolean",
            "default": True,
            "description": "Pass the text of Triton's 4xx error messages to the client "
            "(5xx messages are never passed).",
        },
    },
}
