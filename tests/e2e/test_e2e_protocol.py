"""Both plugins over the runner's socket, frame by frame, with no HTTP anywhere.

What APISIX does on a route with ext-plugin-pre-req and ext-plugin-post-resp, spelled out:
PrepareConf, the call, the runner's ExtraInfo questions (the body, the state header), the final
answer, and that answer applied (the test kit's ``GatewayClient``).
"""

from __future__ import annotations

import ipaddress
import json

import orjson

from apisix_openai_triton.plugins.state import STATE_HEADER, STATE_VAR
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.testkit import FrameLog, GatewayClient, raw_connection

from e2e_stack import MODEL

REQUEST_CONF: list[tuple[str, object]] = [
    ("openai-to-triton", {"models": {MODEL: MODEL}, "backend": "vllm", "template": "llama3"})]
RESPONSE_CONF: list[tuple[str, object]] = [("triton-to-openai", {})]
CHAT = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                     "max_tokens": 5})
PROMPT = ("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")
TRITON_ANSWER = orjson.dumps({"model_name": MODEL, "model_version": "1",
                              "text_output": "one two three", "finish_reason": "stop",
                              "num_input_tokens": 7, "num_output_tokens": 3})


def to_runner(kind: m.MessageType) -> FrameLog:
    return FrameLog("to_runner", kind)


def to_gateway(kind: m.MessageType) -> FrameLog:
    return FrameLog("to_gateway", kind)


def entries(conf: list[tuple[str, object]]) -> list[tuple[str, str]]:
    return [(name, json.dumps(value)) for name, value in conf]


async def test_request_phase_frame_by_frame(runner_socket: str) -> None:
    async with raw_connection(runner_socket) as raw:
        await raw.send(m.PrepareConfRequest(entries(REQUEST_CONF),
                                            "route#chat#ext-plugin-pre-req#1"))
        prepared = await raw.read()
        assert isinstance(prepared, m.PrepareConfResponse)
        await raw.send(m.HTTPReqCallRequest(
            id=41, conf_token=prepared.conf_token, method=m.METHODS.index("POST"),
            path="/v1/chat/completions", src_ip=ipaddress.ip_address("127.0.0.1").packed,
            headers=[("content-type", "application/json"), ("content-length", str(len(CHAT)))]))
        question = await raw.read()
        # The body is not in the call: the runner asks for it.
        assert isinstance(question, m.ExtraInfoRequest) and isinstance(question.info, m.ReqBody)
        await raw.send(m.ExtraInfoResponse(CHAT))
        answer = await raw.read()
    assert isinstance(answer, m.HTTPReqCallResponse) and answer.id == 41
    rewrite = answer.action
    assert isinstance(rewrite, m.Rewrite)
    assert rewrite.path == f"/v2/models/{MODEL}/generate"
    headers = dict(rewrite.headers)
    assert headers["content-type"] == "application/json" and headers[STATE_HEADER]
    assert rewrite.body is not None
    body = orjson.loads(rewrite.body)
    assert body["text_input"] == PROMPT and body["stream"] is False
    assert json.loads(body["sampling_parameters"])["max_tokens"] == 5  # vLLM: a JSON string


async def test_request_then_response_phase_through_the_gateway_client(runner_socket: str) -> None:
    async with GatewayClient(runner_socket) as gateway:
        outcome = await gateway.request(
            REQUEST_CONF, method="POST", path="/v1/chat/completions",
            headers={"content-type": "application/json", "host": "api.example",
                     STATE_HEADER: "forged"},
            body=CHAT)
        assert outcome.frames == [
            to_runner(m.MessageType.PREPARE_CONF), to_gateway(m.MessageType.PREPARE_CONF),
            to_runner(m.MessageType.HTTP_REQ_CALL),
            to_gateway(m.MessageType.EXTRA_INFO), to_runner(m.MessageType.EXTRA_INFO),
            to_gateway(m.MessageType.HTTP_REQ_CALL),
        ]
        assert outcome.action == "rewrite" and outcome.upstream is not None
        upstream = outcome.upstream
        assert upstream.path == f"/v2/models/{MODEL}/generate"
        assert upstream.header("content-type") == "application/json"
        assert upstream.header_values(STATE_HEADER) != ["forged"]  # always overwritten
        assert len(upstream.header_values(STATE_HEADER)) == 1
        assert upstream.host == "api.example"  # the Host is not the plugin's business
        assert upstream.json()["text_input"] == PROMPT

        # The response phase reads the state header back through ExtraInfo Var.
        answered = await gateway.response(
            RESPONSE_CONF, status=200,
            headers={"content-type": "application/json", "content-length": str(len(TRITON_ANSWER))},
            body=TRITON_ANSWER, request_headers=upstream.headers)
        second = await gateway.request(REQUEST_CONF, method="POST", path="/v1/chat/completions",
                                       body=CHAT)
    extra = [f for f in answered.frames if f.type == m.MessageType.EXTRA_INFO]
    assert answered.frames[:3] == [
        to_runner(m.MessageType.PREPARE_CONF), to_gateway(m.MessageType.PREPARE_CONF),
        to_runner(m.MessageType.HTTP_RESP_CALL)]
    assert answered.frames[-1] == to_gateway(m.MessageType.HTTP_RESP_CALL)
    assert len(extra) == 4  # two questions (state header, body), two answers
    assert answered.action == "answered" and answered.status == 200
    assert answered.header("content-type") == "application/json"
    assert answered.header("content-length") is None
    reply = answered.json()
    assert reply["object"] == "chat.completion" and reply["model"] == MODEL
    assert reply["choices"][0]["message"]["content"] == "one two three"
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    # The conf is prepared once per connection pool: the next call skips PrepareConf.
    assert second.frames[0] == to_runner(m.MessageType.HTTP_REQ_CALL)


async def test_response_phase_frame_by_frame(runner_socket: str) -> None:
    async with GatewayClient(runner_socket) as gateway:
        outcome = await gateway.request(REQUEST_CONF, method="POST",
                                        path="/v1/chat/completions", body=CHAT)
    assert outcome.upstream is not None
    state = outcome.upstream.header(STATE_HEADER)
    assert state
    asked: list[m.Info] = []
    async with raw_connection(runner_socket) as raw:
        await raw.send(m.PrepareConfRequest(entries(RESPONSE_CONF)))
        prepared = await raw.read()
        assert isinstance(prepared, m.PrepareConfResponse)
        await raw.send(m.HTTPRespCallRequest(7, prepared.conf_token, 200,
                                             [("content-type", "application/json")]))
        while True:
            message = await raw.read()
            if not isinstance(message, m.ExtraInfoRequest):
                break
            asked.append(message.info)
            if isinstance(message.info, m.Var):
                assert message.info.name == STATE_VAR
                await raw.send(m.ExtraInfoResponse(state.encode()))
            else:
                assert isinstance(message.info, m.RespBody)
                await raw.send(m.ExtraInfoResponse(TRITON_ANSWER))
    assert sorted(type(i).__name__ for i in asked) == ["RespBody", "Var"]
    assert isinstance(message, m.HTTPRespCallResponse) and message.id == 7
    assert message.status == 200
    assert ("content-type", "application/json") in message.headers
    assert orjson.loads(message.body)["choices"][0]["message"]["content"] == "one two three"
