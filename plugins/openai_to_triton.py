"""The ``openai-to-triton`` plugin: the request phase, as a thin shell around pure functions.

Everything it decides lives in ``request_transform``; this class only reads the request from
the runner, turns ``OpenAIError`` into a ``Stop`` with the OpenAI envelope, and applies the
Rewrite: Triton path, ``content-type``, body, and the signed state header, which is always set
so a value sent by the client never reaches the response phase. The client's ``authorization``
header is left alone: ``ext-plugin-pre-req`` runs before the gateway's auth plugins, which still
need it (strip it from the upstream request with ``proxy-rewrite`` or the auth plugin's
``hide_credentials``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

from apisix_openai_triton.runner import Plugin, Request, Stop

from .errors import JSON_HEADERS, OpenAIError
from .request_conf import CONF_SCHEMA, RequestConf, parse_request_conf
from .request_transform import MethodNotAllowed, match_endpoint, models_answer, transform
from .state import STATE_HEADER


class OpenAIToTriton(Plugin[RequestConf]):
    """OpenAI chat / completions / models requests in, Triton generate or infer requests out."""

    name: ClassVar[str] = "openai-to-triton"
    conf_schema: ClassVar[Optional[Mapping[str, Any]]] = CONF_SCHEMA
    prefetch_body: ClassVar[bool] = True

    def parse_conf(self, raw: str) -> RequestConf:
        return parse_request_conf(raw)

    async def request_filter(self, conf: RequestConf, request: Request) -> Optional[Stop]:
        try:
            endpoint, model_id = match_endpoint(request.method, request.path)
            if endpoint == "models" or endpoint == "model":
                return Stop(200, JSON_HEADERS, models_answer(conf, model_id))
            upstream = transform(conf, endpoint, await request.body())
        except OpenAIError as err:
            stop = Stop(err.status, JSON_HEADERS, err.body())
            if isinstance(err, MethodNotAllowed):
                stop.headers.append(("allow", err.allow))
            return stop
        request.path = upstream.path
        headers = request.headers
        headers["content-type"] = "application/json"
        headers[STATE_HEADER] = upstream.state
        request.set_body(upstream.body)
        return None
