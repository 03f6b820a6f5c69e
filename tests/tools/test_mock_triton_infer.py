"""mock-triton KServe v2 /infer: tensors in and out, and the decoupled-model refusal (facts 3.3, 4)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from apisix_openai_triton.tools.mock_triton import start_mock_triton
from apisix_openai_triton.tools.mock_triton_text import complete

PROMPT = "What is machine learning?"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    runner, port = await start_mock_triton(
        models=("vm:vllm", "trt:tensorrtllm", "trtc:tensorrtllm:coupled", "gen:generic"))
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


async def infer(http: aiohttp.ClientSession, model: str, body: Any,
                **kw: Any) -> tuple[int, Any]:
    async with http.post(f"/v2/models/{model}/infer", data=json.dumps(body), **kw) as r:
        assert r.headers["Content-Type"].startswith("application/json")
        return r.status, await r.json()


def trt_request(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "42",
        "inputs": [
            {"name": "text_input", "datatype": "BYTES", "shape": [1, 1], "data": [PROMPT]},
            {"name": "max_tokens", "datatype": "INT32", "shape": [1, 1], "data": [[7]]},
            {"name": "exclude_input_in_output", "datatype": "BOOL", "shape": [1, 1],
             "data": [True]},
            {"name": "stop_words", "datatype": "BYTES", "shape": [1, 2],
             "data": ["</s>", "<|eot_id|>"]},
            {"name": "return_num_output_tokens", "datatype": "BOOL", "shape": [1, 1],
             "data": [True]},
        ],
    }
    body.update(over)
    return body


async def test_trtllm_infer_returns_typed_tensors(http: aiohttp.ClientSession) -> None:
    status, body = await infer(http, "trtc", trt_request())
    assert status == 200
    assert (body["id"], body["model_name"], body["model_version"]) == ("42", "trtc", "1")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["text_output"] == {"name": "text_output", "datatype": "BYTES",
                                      "shape": [1, 1],
                                      "data": [complete(PROMPT, max_tokens=7).text]}
    assert outputs["num_output_tokens"] == {"name": "num_output_tokens", "datatype": "INT32",
                                            "shape": [1, 1], "data": [7]}
    assert outputs["output_log_probs"]["shape"] == [1, 1, 7]


async def test_requested_outputs_only(http: aiohttp.ClientSession) -> None:
    status, body = await infer(http, "trtc", trt_request(outputs=[{"name": "text_output"}]))
    assert status == 200 and [o["name"] for o in body["outputs"]] == ["text_output"]
    status, body = await infer(http, "trtc", trt_request(outputs=[{"name": "nope"}]))
    assert status == 400 and body == {
        "error": "unexpected inference output 'nope' for model 'trtc'"}


async def test_generic_infer_takes_parameters(http: aiohttp.ClientSession) -> None:
    request = {"parameters": {"max_tokens": 4},
               "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1],
                           "data": [PROMPT]}]}
    status, body = await infer(http, "gen", request)
    assert status == 200 and "id" not in body
    assert body["outputs"] == [{"name": "text_output", "datatype": "BYTES", "shape": [1],
                                "data": [complete(PROMPT, max_tokens=4).text]}]


@pytest.mark.parametrize("model", ["vm", "trt"])
async def test_decoupled_models_refuse_infer(http: aiohttp.ClientSession, model: str) -> None:
    status, body = await infer(http, model, trt_request())
    assert status == 501
    assert body == {"error": "HTTP end point doesn't support models with decoupled transaction "
                             "policy"}


async def test_a_generate_body_sent_to_infer(http: aiohttp.ClientSession) -> None:
    status, body = await infer(http, "trtc", {"text_input": PROMPT, "max_tokens": 5})
    assert (status, body) == (400, {"error": "Unable to parse 'inputs'"})


def _with_input(index: int, **change: Any) -> dict[str, Any]:
    request = trt_request()
    request["inputs"][index] = {**request["inputs"][index], **change}
    return request


@pytest.mark.parametrize(("request_body", "message"), [
    (_with_input(1, datatype="INT64"),
     "inference input 'max_tokens' data-type is 'INT64', but model 'trtc' expects 'INT32'"),
    (_with_input(0, shape=[1]), "unexpected shape for input 'text_input' for model 'trtc'. "
                                "Expected [-1,1], got [1]"),
    (_with_input(0, shape=[2, 1], data=["a", "b"]), "unexpected shape for input 'text_input'"),
    (_with_input(3, shape=[1, 3]), "Unable to parse 'data' for input 'stop_words'"),
    (_with_input(0, name="prompt"), "unexpected inference input 'prompt' for model 'trtc'"),
    (_with_input(1, data=["7"]), "attempt to access JSON non-signed-integer as signed-integer"),
    (trt_request(inputs=trt_request()["inputs"][:1]),
     "expected number of inputs between 2 and 24 but got 1 inputs for model 'trtc'"),
    (trt_request(parameters={"stop": ["x"]}),
     "parameter 'stop' has invalid type. It should be either 'int', 'bool', or 'string'."),
])
async def test_invalid_infer_requests(http: aiohttp.ClientSession, request_body: dict[str, Any],
                                      message: str) -> None:
    status, body = await infer(http, "trtc", request_body)
    assert status == 400
    assert message in body["error"]


async def test_duplicate_input_and_binary_extension(http: aiohttp.ClientSession) -> None:
    request = trt_request()
    request["inputs"].append(request["inputs"][0])
    status, body = await infer(http, "trtc", request)
    assert (status, body["error"]) == (400, "input 'text_input' already exists in request")
    status, body = await infer(http, "trtc", trt_request(),
                               headers={"Inference-Header-Content-Length": "10"})
    assert status == 400 and "binary" in body["error"]
