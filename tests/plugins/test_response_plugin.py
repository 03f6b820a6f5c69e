"""The triton-to-openai plugin class on a real runner Response: state, headers, status, body."""

from __future__ import annotations

import gzip
from typing import Optional

import orjson
import pytest
from openai.types.chat import ChatCompletion

from apisix_openai_triton.plugins.response_conf import parse_response_conf
from apisix_openai_triton.plugins.state import STATE_VAR, CallState, encode_state
from apisix_openai_triton.plugins.triton_to_openai import TritonToOpenAI
from apisix_openai_triton.runner import Response
from apisix_openai_triton.runner.protocol import messages as m

UPSTREAM_HEADERS: list[m.Entry] = [
    ("content-type", "text/event-stream; charset=utf-8"), ("content-length", "123"),
    ("transfer-encoding", "chunked"), ("x-internal-hop", "triton-7"), ("server", "triton"),
]


def chat_state(**changes: object) -> CallState:
    fields: dict[str, object] = dict(model="my-model", endpoint="chat", id="chatcmpl-xyz", created=1_700_000_001,
                                     stream=False, include_usage=False, n=1, max_tokens=32, backend="vllm",
                                     api="generate", stop=())
    fields.update(changes)
    return CallState(**fields)  # type: ignore[arg-type]


class Gateway:
    """Answers the plugin's ExtraInfo questions the way the gateway would, and records them."""

    def __init__(self, body: bytes, state_value: Optional[str]) -> None:
        self.body = body
        self.state_value = state_value
        self.asked: list[m.Info] = []

    async def ask(self, info: m.Info) -> Optional[bytes]:
        self.asked.append(info)
        if isinstance(info, m.RespBody):
            return self.body or None
        if isinstance(info, m.Var) and info.name == STATE_VAR and self.state_value is not None:
            return self.state_value.encode()
        return None


async def filter_once(status: int, body: bytes, state_value: Optional[str], conf_raw: str = "{}",
                      headers: Optional[list[m.Entry]] = None) -> tuple[m.HTTPRespCallResponse, Gateway]:
    plugin = TritonToOpenAI()
    conf = plugin.parse_conf(conf_raw)
    gateway = Gateway(body, state_value)
    call = m.HTTPRespCallRequest(id=41, conf_token=3, status=status,
                                 headers=list(UPSTREAM_HEADERS if headers is None else headers))
    response = Response(call, gateway.ask)
    await plugin.response_filter(conf, response)
    return response.to_message(), gateway


def test_plugin_declaration() -> None:
    assert TritonToOpenAI.name == "triton-to-openai"
    assert TritonToOpenAI.prefetch_body is True
    assert TritonToOpenAI.prefetch_vars == (STATE_VAR,)
    assert TritonToOpenAI.conf_schema is not None and TritonToOpenAI.conf_schema["type"] == "object"


async def test_generate_answer() -> None:
    body = b'{"model_name":"llama","text_output":"Hello!","num_input_tokens":3,"num_output_tokens":2}'
    msg, gateway = await filter_once(200, body, encode_state(chat_state()),
                                     headers=[("content-type", "application/json"), ("content-length", "80")])
    assert msg.id == 41 and msg.status == 200
    assert msg.headers == [("content-type", "application/json")]
    completion = ChatCompletion.model_validate_json(msg.body)
    assert completion.choices[0].message.content == "Hello!" and completion.model == "my-model"
    assert {type(i) for i in gateway.asked} == {m.RespBody, m.Var}


async def test_stream_answer_headers_replace_upstream_ones() -> None:
    st = chat_state(stream=True, api="generate_stream")
    msg, _ = await filter_once(200, b'data: {"text_output":"a"}\n\n', encode_state(st))
    assert msg.status == 200
    assert msg.headers == [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
    assert msg.body.startswith(b"data: {") and msg.body.endswith(b"data: [DONE]\n\n")


async def test_usage_headers() -> None:
    body = b'{"text_output":"x","num_input_tokens":3,"num_output_tokens":2}'
    msg, _ = await filter_once(200, body, encode_state(chat_state()), conf_raw='{"usage_headers": "x-llm"}')
    assert dict(msg.headers) == {"content-type": "application/json", "x-llm-prompt-tokens": "3",
                                 "x-llm-completion-tokens": "2", "x-llm-total-tokens": "5"}
    # no counts: no usage headers (never zeros)
    msg, _ = await filter_once(200, b'{"text_output":"x"}', encode_state(chat_state()),
                               conf_raw='{"usage_headers": true}')
    assert dict(msg.headers) == {"content-type": "application/json"}


async def test_upstream_error_status_is_mapped() -> None:
    msg, _ = await filter_once(404, b'{"error":"Request for unknown model"}', encode_state(chat_state()),
                               headers=[("content-type", "application/json")])
    assert msg.status == 404 and msg.headers == [("content-type", "application/json")]
    assert orjson.loads(msg.body)["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("state_value", [None, "", "garbage", "e30.AAAAAAAAAAAAAAAAAAAAAA==",
                                         encode_state(chat_state())[:-4] + "AAA="])
async def test_missing_or_forged_state_is_a_500(state_value: Optional[str], caplog: pytest.LogCaptureFixture) -> None:
    msg, _ = await filter_once(200, b'{"text_output":"SECRET"}', state_value)
    assert msg.status == 500 and msg.headers == [("content-type", "application/json")]
    err = orjson.loads(msg.body)["error"]
    assert err["type"] == "server_error" and b"SECRET" not in msg.body
    assert "x-openai-triton-state" in caplog.text and "SECRET" not in caplog.text


async def test_primed_response_asks_nothing() -> None:
    """What the runner does with prefetch: body and state var arrive before the filter runs."""
    plugin = TritonToOpenAI()
    conf = parse_response_conf("")
    gateway = Gateway(b"", None)
    response = Response(m.HTTPRespCallRequest(id=1, conf_token=1, status=200), gateway.ask)
    response.prime(b'{"text_output":"primed"}', {STATE_VAR: encode_state(chat_state())})
    await plugin.response_filter(conf, response)
    assert gateway.asked == []
    assert ChatCompletion.model_validate_json(response.to_message().body).choices[0].message.content == "primed"


async def test_empty_upstream_body() -> None:
    msg, _ = await filter_once(200, b"", encode_state(chat_state()))
    assert msg.status == 502 and orjson.loads(msg.body)["error"]["type"] == "server_error"


async def test_gzip_upstream_body() -> None:
    msg, _ = await filter_once(200, gzip.compress(b'{"text_output":"z"}'), encode_state(chat_state()),
                               headers=[("content-type", "application/json"), ("content-encoding", "gzip")])
    assert msg.status == 200 and ("content-encoding", "gzip") not in msg.headers
    assert ChatCompletion.model_validate_json(msg.body).choices[0].message.content == "z"
