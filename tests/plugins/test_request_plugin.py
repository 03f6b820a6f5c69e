"""The plugin class over the real runner views: the Rewrite it leaves and the Stops it answers."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from apisix_openai_triton.plugins.openai_to_triton import OpenAIToTriton
from apisix_openai_triton.plugins.state import STATE_HEADER, decode_state
from apisix_openai_triton.runner import Request, Stop
from apisix_openai_triton.runner.protocol import messages as m

PLUGIN = OpenAIToTriton()
CONF = PLUGIN.parse_conf('{"model": "llama-3-8b", "backend": "vllm", "max_body_bytes": 4096}')
POST, GET = m.METHODS.index("POST"), m.METHODS.index("GET")


def request(method: int, path: str, body: Optional[bytes],
            headers: list[m.Entry] | None = None) -> tuple[Request, list[m.Info]]:
    asked: list[m.Info] = []

    async def ask(info: m.Info) -> Optional[bytes]:
        asked.append(info)
        assert isinstance(info, m.ReqBody)
        return body

    call = m.HTTPReqCallRequest(id=7, conf_token=1, method=method, path=path,
                                headers=headers or [("content-type", "application/json")])
    return Request(call, ask), asked


async def run(method: int, path: str, body: Any = None,
              headers: list[m.Entry] | None = None) -> tuple[Optional[Stop], m.Action, list[m.Info]]:
    raw = body if body is None or isinstance(body, bytes) else orjson.dumps(body)
    req, asked = request(method, path, raw, headers)
    stop = await PLUGIN.request_filter(CONF, req)
    return stop, req.to_action(), asked


CHAT = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


async def test_chat_becomes_a_rewrite_to_generate_stream_with_a_fresh_state_header() -> None:
    forged = "forged.value"
    stop, action, asked = await run(POST, "/v1/chat/completions", CHAT,
                                    [("content-type", "text/plain"), (STATE_HEADER, forged),
                                     ("authorization", "Bearer sk-1")])
    assert stop is None and asked == [m.ReqBody()]
    assert isinstance(action, m.Rewrite)
    assert action.path == "/v2/models/llama-3-8b/generate_stream"
    headers = dict(action.headers)
    assert set(headers) == {"content-type", STATE_HEADER}  # authorization untouched
    assert headers["content-type"] == "application/json"
    value = headers[STATE_HEADER]
    assert value is not None and value != forged
    state = decode_state(value)
    assert (state.model, state.stream, state.endpoint) == ("llama-3-8b", True, "chat")
    assert action.body is not None and orjson.loads(action.body)["stream"] is True


async def test_errors_are_stops_with_the_openai_envelope() -> None:
    stop, action, _ = await run(POST, "/v1/chat/completions", {"messages": []})
    assert isinstance(stop, Stop) and stop.status == 400 and action is None
    assert ("content-type", "application/json") in stop.headers
    assert orjson.loads(stop.body)["error"]["param"] == "messages"

    stop, _, _ = await run(POST, "/v1/chat/completions", b"x" * 5000)
    assert stop is not None and stop.status == 413
    assert orjson.loads(stop.body)["error"]["code"] == "content_too_large"

    stop, _, asked = await run(GET, "/v1/chat/completions")
    assert stop is not None and stop.status == 405 and ("allow", "POST") in stop.headers

    stop, _, _ = await run(POST, "/v1/embeddings", {"input": "x"})
    assert stop is not None and stop.status == 404


async def test_models_are_answered_from_the_conf_without_reading_the_body() -> None:
    stop, action, asked = await run(GET, "/gw/v1/models")
    assert isinstance(stop, Stop) and stop.status == 200 and asked == [] and action is None
    assert [x["id"] for x in orjson.loads(stop.body)["data"]] == ["llama-3-8b"]
    stop, _, _ = await run(GET, "/v1/models/other")
    assert stop is not None and stop.status == 404
    stop, _, _ = await run(POST, "/v1/models")
    assert stop is not None and ("allow", "GET, HEAD") in stop.headers


async def test_legacy_completions_become_a_generate_rewrite() -> None:
    stop, action, _ = await run(POST, "/v1/completions", {"prompt": "Once", "max_tokens": 3})
    assert stop is None and isinstance(action, m.Rewrite)
    assert action.path == "/v2/models/llama-3-8b/generate"
    sampling = orjson.loads(orjson.loads(action.body or b"{}")["sampling_parameters"])
    assert sampling["max_tokens"] == 3
