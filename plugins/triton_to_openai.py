"""The ``triton-to-openai`` plugin (``ext-plugin-post-resp``): Triton's answer as an OpenAI answer.

A thin shell around ``response_transform.convert``: it reads the state the request plugin left
in a signed request header, hands the upstream status and body to the pure conversion, and writes
the result with headers of its own. No upstream header is kept: Triton's are framing and
content-type (both replaced), and the gateway adds its own ``date`` and ``server``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping, Optional

from apisix_openai_triton.runner import Plugin, Response
from apisix_openai_triton.runner.metrics import count_tokens

from .errors import OpenAIError
from .response_conf import CONF_SCHEMA, ResponseConf, parse_response_conf
from .response_transform import Converted, convert
from .state import STATE_VAR, StateError, decode_state

log = logging.getLogger(__name__)

_JSON = "application/json"
_EVENT_STREAM = "text/event-stream"


class TritonToOpenAI(Plugin[ResponseConf]):
    """Answers the client in the OpenAI format, whatever Triton answered."""

    name: ClassVar[str] = "triton-to-openai"
    conf_schema: ClassVar[Optional[Mapping[str, Any]]] = CONF_SCHEMA
    prefetch_body: ClassVar[bool] = True
    prefetch_vars: ClassVar[tuple[str, ...]] = (STATE_VAR,)

    def parse_conf(self, raw: str) -> ResponseConf:
        return parse_response_conf(raw)

    async def response_filter(self, conf: ResponseConf, response: Response) -> None:
        try:
            state = decode_state(await response.var(STATE_VAR))
        except StateError as exc:
            # The route lacks openai-to-triton, or the header was forged or outlived a restart:
            # nothing says which model or format the client expects, and the fault is ours.
            log.warning("call %d: %s", response.id, exc)
            _write(conf, response, Converted.error(OpenAIError(
                500, "The gateway could not match this answer to its request", "server_error")))
            return
        body = await response.body()
        converted = convert(
            conf, state, response.upstream_status, body,
            content_encoding=response.headers.get("content-encoding"),
            prompt_tokens=state.prompt_tokens or None,
        )
        usage = converted.usage
        if usage is not None:
            count_tokens(state.model, usage.prompt_tokens, usage.completion_tokens)
        _write(conf, response, converted)


def _write(conf: ResponseConf, response: Response, converted: Converted) -> None:
    headers = response.headers
    headers.clear()
    if converted.stream:
        headers["content-type"] = _EVENT_STREAM
        headers["cache-control"] = "no-cache"
    else:
        headers["content-type"] = _JSON
    if conf.usage_headers is not None and converted.usage is not None:
        prompt, completion, total = conf.usage_headers
        usage = converted.usage
        headers[prompt] = str(usage.prompt_tokens)
        headers[completion] = str(usage.completion_tokens)
        headers[total] = str(usage.total_tokens)
    response.status = converted.status
    response.set_body(converted.body)
