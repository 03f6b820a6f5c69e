"""The whole request phase as pure functions: which endpoint, and OpenAI body -> Triton request.

The endpoint is decided by the suffix of the path the gateway reports (the request URI, or the
upstream URI if a plugin before this one rewrote it; no query string), so a route published
under a prefix (``/llm/v1/chat/completions``) works unchanged.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Literal, Optional

from .chat_fast import parse_chat_body
from .chat_request import load_object, parse_completion
from .errors import OpenAIError
from .request_conf import MAX_BODY_CEILING, RequestConf, model_not_found
from .state import Api, CallState, encode_state
from .templates import too_long
from .triton_request import build_body, stop_list
from .usage import count_prompt_tokens

Endpoint = Literal["chat", "completions", "models", "model"]


class MethodNotAllowed(OpenAIError):
    """405, with the methods the endpoint takes (for the ``allow`` header)."""

    def __init__(self, method: str, path: str, allow: tuple[str, ...]) -> None:
        super().__init__(405, f"Method {method[:16]} is not allowed for {path[:200]}; use "
                              f"{allow[0]}.", code="method_not_allowed")
        self.allow = ", ".join(allow)


@dataclass(frozen=True, slots=True)
class Upstream:
    """What the Rewrite carries: the Triton path, the body, and the signed state header."""

    path: str
    body: bytes
    state: str


def match_endpoint(method: str, path: str) -> tuple[Endpoint, Optional[str]]:
    """The endpoint for a request, with the model id of ``GET .../models/{id}``.

    Unknown paths get OpenAI's 404 "Invalid URL", wrong methods a 405.
    """
    trimmed = path.rstrip("/")
    endpoint: Endpoint
    model_id = None
    if trimmed.endswith("/chat/completions"):
        endpoint = "chat"
    elif trimmed.endswith("/completions"):
        endpoint = "completions"
    elif trimmed.endswith("/models"):
        endpoint = "models"
    else:
        at = trimmed.find("/v1/models/")
        start = at + 11 if at >= 0 else trimmed.find("/models/") + 8
        if start < 8:
            raise OpenAIError(404, f"Invalid URL ({method} {path[:200]})", code="unknown_url")
        endpoint, model_id = "model", trimmed[start:]
    allowed = ("POST",) if endpoint in ("chat", "completions") else ("GET", "HEAD")
    if method not in allowed:
        raise MethodNotAllowed(method, path, allowed)
    return endpoint, model_id


def models_answer(conf: RequestConf, model_id: Optional[str]) -> bytes:
    """``GET /v1/models`` (a list) or ``GET /v1/models/{id}`` (one model) from the conf."""
    if model_id is None:
        return conf.models_body
    body = conf.model_bodies.get(model_id)
    if body is None:
        raise model_not_found(model_id)
    return body


def transform(conf: RequestConf, endpoint: Literal["chat", "completions"], body: bytes,
              now: Optional[float] = None) -> Upstream:
    """Validate an OpenAI request body and build the Triton request, or raise ``OpenAIError``."""
    limit = conf.raw.max_body_bytes
    if len(body) > limit:
        raise OpenAIError(413, f"The request body is {len(body)} bytes, over this route's limit "
                               f"of {limit} bytes.", code="content_too_large")
    policy = conf.policy
    if endpoint == "chat":
        chat = parse_chat_body(body, policy)
        model, sampling, stream, usage = chat.model, chat.sampling, chat.stream, chat.include_usage
        target = conf.resolve(model)
        prompt = conf.template.render(chat.messages, chat.tools, conf.raw.bos)
        prefix = "chatcmpl-"
    else:
        if not conf.raw.completions:
            raise OpenAIError(404, "The legacy completions endpoint is disabled on this route; "
                                   "use /v1/chat/completions.", code="unknown_url")
        legacy = parse_completion(load_object(body), policy)
        model, sampling, stream, usage = (legacy.model, legacy.sampling, legacy.stream,
                                          legacy.include_usage)
        target = conf.resolve(model)
        bos = conf.template.bos_token if conf.raw.bos else ""
        prompt = bos + legacy.prompt
        prefix = "cmpl-"
    if len(prompt) > conf.raw.max_prompt_chars:
        raise too_long(len(prompt), conf.raw.max_prompt_chars)
    api: Api = "generate_stream" if stream else conf.raw.api
    payload = build_body(conf.body, "infer" if api == "infer" else "generate", prompt, sampling,
                         stream)
    if len(payload) > MAX_BODY_CEILING:
        raise OpenAIError(413, "The Triton request built from this body is over the gateway's "
                               "frame limit; shorten the conversation.", code="content_too_large")
    tokenizer = conf.prompt_tokenizer
    state = CallState(
        model=target.served, endpoint=endpoint, id=prefix + secrets.token_hex(12),
        created=int(time.time() if now is None else now), stream=stream, include_usage=usage,
        n=sampling.n, max_tokens=sampling.max_tokens, backend=conf.raw.backend, api=api,
        stop=stop_list(conf.body, sampling),
        prompt_tokens=None if tokenizer is None else count_prompt_tokens(tokenizer, prompt),
    )
    return Upstream(target.paths[api], payload, encode_state(state))
