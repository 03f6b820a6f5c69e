"""mock-triton over real HTTP: generate / generate_stream per backend, metadata, request mapping.

Format assertions come from the facts sheet (sections 1-3): flat JSON, one-element tensors as bare
values, SSE with only ``data:`` lines and no terminator, per-event deltas and counts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from apisix_openai_triton.tools.mock_triton import start_mock_triton
from apisix_openai_triton.tools.mock_triton_text import complete, count_tokens

MODELS = ("vm:vllm", "trt:tensorrtllm", "trtc:tensorrtllm:coupled", "gen:generic",
          "gend:generic:decoupled")
PROMPT = "<|begin_of_text|>Hello there, how are you today?"
SSE = "text/event-stream; charset=utf-8"
INVALID = "parameter '{}' has invalid type. It should be either 'int', 'bool', or 'string'."


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    runner, port = await start_mock_triton("127.0.0.1", 0, models=MODELS)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


def vllm_body(prompt: str = PROMPT, stream: bool = False, **sampling: Any) -> dict[str, Any]:
    return {
        "text_input": prompt,
        "stream": stream,
        "exclude_input_in_output": True,
        "sampling_parameters": json.dumps({"max_tokens": 64, **sampling}),
        "return_finish_reason": True,
        "return_num_input_tokens": True,
        "return_num_output_tokens": True,
    }


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """Strict Triton SSE: only ``data: <json>\\n\\n`` blocks, nothing else, no [DONE]."""
    assert raw.endswith(b"\n\n")
    blocks = raw[:-2].split(b"\n\n")
    assert all(block.startswith(b"data: ") and b"\n" not in block for block in blocks)
    assert b"[DONE]" not in raw
    return [json.loads(block[6:]) for block in blocks]


async def post(http: aiohttp.ClientSession, path: str, body: Any,
               **kw: Any) -> tuple[int, str, bytes]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with http.post(path, data=data, **kw) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


# --- health, metadata, config, ready ---------------------------------------------------------


async def test_health_endpoints(http: aiohttp.ClientSession) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/vm/ready",
                 "/v2/models/vm/versions/1/ready"):
        async with http.get(path) as r:
            assert r.status == 200, path
    async with http.post("/v2/health/ready") as r:
        assert r.status == 405


async def test_model_metadata_follows_kserve_and_the_backend(http: aiohttp.ClientSession) -> None:
    async with http.get("/v2/models/vm") as r:
        vm = await r.json()
    assert vm["name"] == "vm" and vm["versions"] == ["1"] and vm["platform"] == "vllm"
    inputs = {t["name"]: t for t in vm["inputs"]}
    assert inputs["text_input"] == {"name": "text_input", "datatype": "BYTES", "shape": [1]}
    assert {"sampling_parameters", "exclude_input_in_output", "return_finish_reason",
            "return_num_input_tokens", "return_num_output_tokens", "stream"} <= inputs.keys()
    async with http.get("/v2/models/trt/versions/1") as r:
        trt = await r.json()
    trt_inputs = {t["name"]: t for t in trt["inputs"]}
    assert trt_inputs["max_tokens"] == {"name": "max_tokens", "datatype": "INT32",
                                        "shape": [-1, 1]}
    assert trt_inputs["stop_words"]["shape"] == [-1, -1]
    assert "seed" in trt_inputs and "random_seed" not in trt_inputs
    assert "finish_reason" not in {t["name"] for t in trt["outputs"]}


async def test_model_config_says_decoupled_and_batching(http: aiohttp.ClientSession) -> None:
    expected = {"vm": (True, 0), "trt": (True, 64), "trtc": (False, 64), "gen": (False, 0),
                "gend": (True, 0)}
    for name, (decoupled, batch) in expected.items():
        async with http.get(f"/v2/models/{name}/config") as r:
            config = await r.json()
        assert config["model_transaction_policy"] == {"decoupled": decoupled}
        assert config["max_batch_size"] == batch
    text_input = next(i for i in config["input"] if i["name"] == "text_input")
    assert text_input == {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1],
                          "optional": False}


async def test_unknown_model_and_version_are_404_json(http: aiohttp.ClientSession) -> None:
    for path in ("/v2/models/nope/generate", "/v2/models/vm/versions/2/generate"):
        status, ctype, raw = await post(http, path, {"text_input": "x"})
        assert status == 404 and ctype.startswith("application/json")
        assert "nope" in json.loads(raw)["error"] or "version 2" in json.loads(raw)["error"]
    for path in ("/v2/models/nope", "/v2/models/nope/config", "/v2/models/nope/ready"):
        async with http.get(path) as r:
            assert r.status == 404
            assert set(await r.json()) == {"error"}


@pytest.mark.parametrize("api", ["generate", "generate_stream", "infer"])
async def test_non_post_is_405(http: aiohttp.ClientSession, api: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        async with http.request(method, f"/v2/models/gen/{api}") as r:
            assert r.status == 405
    async with http.post("/v2/models/gen/config") as r:
        assert r.status == 405


# --- vLLM --------------------------------------------------------------------------------------


async def test_vllm_generate_is_flat_json_with_bare_scalars(http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await post(http, "/v2/models/vm/generate", vllm_body())
    assert status == 200 and ctype == "application/json"
    body = json.loads(raw)
    assert set(body) == {"model_name", "model_version", "text_output", "finish_reason",
                         "num_input_tokens", "num_output_tokens"}
    assert (body["model_name"], body["model_version"]) == ("vm", "1")
    expected = complete(PROMPT, max_tokens=64)
    assert body["text_output"] == expected.text
    assert body["finish_reason"] == expected.finish_reason == "stop"
    assert body["num_input_tokens"] == count_tokens(PROMPT)
    assert body["num_output_tokens"] == expected.tokens


async def test_vllm_only_requested_outputs_and_length(http: aiohttp.ClientSession) -> None:
    body = {"text_input": PROMPT, "exclude_input_in_output": True,
            "sampling_parameters": json.dumps({"max_tokens": 3}), "return_finish_reason": True}
    status, _, raw = await post(http, "/v2/models/vm/generate", body)
    answer = json.loads(raw)
    assert status == 200 and set(answer) == {"model_name", "model_version", "text_output",
                                             "finish_reason"}
    assert answer["finish_reason"] == "length"
    assert len(answer["text_output"].split()) == 3


async def test_vllm_echoes_the_prompt_unless_excluded(http: aiohttp.ClientSession) -> None:
    body = vllm_body()
    del body["exclude_input_in_output"]
    _, _, raw = await post(http, "/v2/models/vm/generate", body)
    assert json.loads(raw)["text_output"] == PROMPT + complete(PROMPT, max_tokens=64).text
    body["exclude_input_in_output"] = False
    _, _, raw = await post(http, "/v2/models/vm/generate", body)
    assert json.loads(raw)["text_output"].startswith(PROMPT)


async def test_vllm_stream_sends_deltas_and_counts_per_event(http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await post(http, "/v2/models/vm/generate_stream", vllm_body(stream=True))
    assert status == 200 and ctype == SSE
    events = sse_events(raw)
    expected = complete(PROMPT, max_tokens=64)
    assert len(events) == expected.tokens > 1
    assert [e["text_output"] for e in events] == list(expected.pieces)
    assert "".join(e["text_output"] for e in events) == expected.text
    assert [e["finish_reason"] for e in events] == ["None"] * (len(events) - 1) + ["stop"]
    assert all(e["num_output_tokens"] == 1 for e in events)
    assert all(e["num_input_tokens"] == count_tokens(PROMPT) for e in events)
    assert all(e["model_name"] == "vm" for e in events)


async def test_vllm_stream_over_generate_is_the_one_response_error(
        http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await post(http, "/v2/models/vm/generate", vllm_body(stream=True))
    assert status == 400 and ctype.startswith("application/json")
    assert json.loads(raw) == {"error": "generate expects model to produce exactly 1 response, "
                               "use generate stream for model that generates various number of "
                               "responses"}


async def test_vllm_non_stream_over_generate_stream_is_one_event(
        http: aiohttp.ClientSession) -> None:
    status, _, raw = await post(http, "/v2/models/vm/generate_stream", vllm_body())
    events = sse_events(raw)
    assert status == 200 and len(events) == 1
    assert events[0]["text_output"] == complete(PROMPT, max_tokens=64).text


async def test_vllm_streaming_with_echo_is_a_model_error(http: aiohttp.ClientSession) -> None:
    body = vllm_body(stream=True)
    body["exclude_input_in_output"] = False
    message = ("Error generating stream: When streaming, `exclude_input_in_output` = False is "
               "not allowed.")
    status, ctype, raw = await post(http, "/v2/models/vm/generate_stream", body)
    # The model's first response is the error: error status, error as the only SSE event.
    assert status == 500 and ctype == SSE
    assert sse_events(raw) == [{"error": message}]
    status, _, raw = await post(http, "/v2/models/vm/generate", body)
    assert status == 500 and json.loads(raw) == {"error": message}


async def test_vllm_stop_is_removed_in_both_modes(http: aiohttp.ClientSession) -> None:
    words = complete(PROMPT, max_tokens=64).text.split()
    index = next(i for i in range(3, len(words)) if words[i] not in " ".join(words[:i]))
    stop = [words[index], "never-said"]
    _, _, raw = await post(http, "/v2/models/vm/generate", vllm_body(stop=stop))
    body = json.loads(raw)
    assert body["text_output"] == " ".join(words[:index]) + " "
    assert body["finish_reason"] == "stop" and body["num_output_tokens"] == index + 1
    _, _, raw = await post(http, "/v2/models/vm/generate_stream", vllm_body(stream=True, stop=stop))
    events = sse_events(raw)
    assert "".join(e["text_output"] for e in events) == body["text_output"]
    assert sum(e["num_output_tokens"] for e in events) == index + 1
    assert events[-1]["finish_reason"] == "stop"


async def test_vllm_n_gives_lists_per_choice(http: aiohttp.ClientSession) -> None:
    _, _, raw = await post(http, "/v2/models/vm/generate", vllm_body(n=2, max_tokens=64))
    body = json.loads(raw)
    assert isinstance(body["text_output"], list) and len(body["text_output"]) == 2
    assert body["text_output"][0] != body["text_output"][1]
    assert len(body["finish_reason"]) == 2 and len(body["num_output_tokens"]) == 2
    assert isinstance(body["num_input_tokens"], int)
    _, _, raw = await post(http, "/v2/models/vm/generate_stream", vllm_body(stream=True, n=2))
    events = sse_events(raw)
    assert all(len(e["text_output"]) == 2 for e in events)
    for choice in (0, 1):
        assert "".join(e["text_output"][choice] for e in events) == body["text_output"][choice]
        reasons = [e["finish_reason"][choice] for e in events]
        final = reasons.index(body["finish_reason"][choice])
        assert set(reasons[:final]) <= {"None"} and set(reasons[final:]) == {"stop"}
        assert sum(e["num_output_tokens"][choice] for e in events) == \
            body["num_output_tokens"][choice]


async def test_vllm_request_parameters_are_sampling_fields(http: aiohttp.ClientSession) -> None:
    body = {"text_input": PROMPT, "exclude_input_in_output": True,
            "parameters": {"max_tokens": 4, "temperature": 0}}
    status, _, raw = await post(http, "/v2/models/vm/generate", body)
    assert status == 200
    assert json.loads(raw)["text_output"] == complete(PROMPT, max_tokens=4).text


async def test_vllm_stray_keys_break_requests_without_sampling_parameters(
        http: aiohttp.ClientSession) -> None:
    bad = "Error generating stream: 'NoneType' object has no attribute 'lora_name'"
    for extra in ({"id": "req-1"}, {"max_completion_tokens": 5}, {"max_tokens": 0}):
        body = {"text_input": PROMPT, "exclude_input_in_output": True, **extra}
        status, _, raw = await post(http, "/v2/models/vm/generate", body)
        assert (status, json.loads(raw)) == (500, {"error": bad}), extra
    # With sampling_parameters, request parameters are ignored and "id" is echoed.
    body = {"id": "req-1", **vllm_body(), "max_completion_tokens": 5}
    status, _, raw = await post(http, "/v2/models/vm/generate", body)
    answer = json.loads(raw)
    assert status == 200 and answer["id"] == "req-1" and list(answer)[:3] == [
        "id", "model_name", "model_version"]


# --- request mapping (facts 1.2) ---------------------------------------------------------------


async def test_list_parameters_are_refused_top_level_and_nested(
        http: aiohttp.ClientSession) -> None:
    body: dict[str, Any] = {"text_input": PROMPT, "stop": ["a", "b"]}
    status, _, raw = await post(http, "/v2/models/vm/generate", body)
    assert (status, json.loads(raw)) == (400, {"error": INVALID.format("stop")})
    body = {"text_input": PROMPT, "parameters": {"stop_token_ids": [1, 2]}}
    status, _, raw = await post(http, "/v2/models/vm/generate", body)
    assert (status, json.loads(raw)) == (
        400, {"error": "Converting keyword: 'parameters': " + INVALID.format("stop_token_ids")})
    for value in ({"a": 1}, None):
        status, _, raw = await post(http, "/v2/models/gen/generate",
                                    {"text_input": "x", "nested": value})
        assert (status, json.loads(raw)["error"]) == (400, INVALID.format("nested"))


async def test_an_infer_body_sent_to_generate_fails_on_inputs(
        http: aiohttp.ClientSession) -> None:
    body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1, 1],
                        "data": [PROMPT]}],
            "outputs": [{"name": "text_output"}]}
    for model in ("trt", "vm", "gen"):
        status, ctype, raw = await post(http, f"/v2/models/{model}/generate", body)
        assert status == 400 and ctype.startswith("application/json")
        assert json.loads(raw) == {"error": INVALID.format("inputs")}


async def test_missing_required_inputs(http: aiohttp.ClientSession) -> None:
    cases = {
        "vm": ({"parameters": {"max_tokens": 5}},
               "expected number of inputs between 1 and 10 but got 0 inputs for model 'vm'"),
        "trt": ({"text_input": PROMPT},
                "expected number of inputs between 2 and 24 but got 1 inputs for model 'trt'"),
        "gen": ({"max_tokens": 3},
                "expected number of inputs between 1 and 2 but got 0 inputs for model 'gen'"),
    }
    for model, (body, message) in cases.items():
        for api in ("generate", "generate_stream"):
            status, ctype, raw = await post(http, f"/v2/models/{model}/{api}", body)
            assert status == 400 and ctype.startswith("application/json")
            assert json.loads(raw)["error"].endswith(message)


async def test_input_types_are_checked_in_document_order(http: aiohttp.ClientSession) -> None:
    cases = [
        ('{"text_input": 123}', "attempt to access JSON non-string as string"),
        ('{"text_input": {"role": "user"}}', "attempt to access JSON non-string as string"),
        ('{"text_input": "x", "stream": "false"}', "attempt to access JSON non-boolean as boolean"),
        ('{"stream": 1, "text_input": true}', "attempt to access JSON non-boolean as boolean"),
        ('{"text_input": ["a", "b"]}', "unexpected shape for input 'text_input'"),
        ('{"text_input": "x", "text_input": "y"}', "input 'text_input' already exists in request"),
        ('{"text_input": "x", "parameters": 5}', "Expected JSON object for keyword: 'parameters'"),
        ('{"text_input": "x"', "failed to parse the request JSON buffer"),
        ('["text_input"]', "failed to parse the request JSON buffer"),
    ]
    for raw_body, message in cases:
        status, _, raw = await post(http, "/v2/models/vm/generate", raw_body)
        assert status == 400, raw_body
        assert json.loads(raw)["error"].startswith(message), raw_body
    status, _, raw = await post(http, "/v2/models/trt/generate",
                                {"text_input": "x", "max_tokens": "64"})
    assert json.loads(raw)["error"] == "attempt to access JSON non-signed-integer as signed-integer"


async def test_a_one_element_array_is_the_same_as_a_scalar(http: aiohttp.ClientSession) -> None:
    plain = await post(http, "/v2/models/trt/generate",
                       {"text_input": PROMPT, "max_tokens": 5, "exclude_input_in_output": True})
    arrays = await post(http, "/v2/models/trt/generate",
                        {"text_input": [PROMPT], "max_tokens": [5],
                         "exclude_input_in_output": [True]})
    assert plain == arrays and plain[0] == 200


async def test_content_encoding_other_than_identity_is_refused(
        http: aiohttp.ClientSession) -> None:
    status, _, raw = await post(http, "/v2/models/gen/generate", {"text_input": "x"},
                                headers={"Content-Encoding": "gzip"})
    assert (status, json.loads(raw)["error"]) == (
        400, "Unsupported content-encoding, only 'identity' is supported.")


# --- TensorRT-LLM ------------------------------------------------------------------------------


def trt_body(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"text_input": PROMPT, "max_tokens": 64, "exclude_input_in_output": True,
            "stream": stream, "return_num_input_tokens": True, "return_num_output_tokens": True,
            **extra}


async def test_trtllm_generate_has_its_outputs_and_no_finish_reason(
        http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await post(http, "/v2/models/trt/generate", trt_body(max_tokens=5))
    assert status == 200 and ctype == "application/json"
    body = json.loads(raw)
    assert "finish_reason" not in body
    assert {"text_output", "cum_log_probs", "output_log_probs", "batch_index",
            "num_input_tokens", "num_output_tokens"} <= set(body)
    assert body["text_output"] == complete(PROMPT, max_tokens=5).text
    assert body["num_output_tokens"] == 5  # == max_tokens: the runner must say "length"
    assert body["output_log_probs"] == [0.0] * 5
    assert body["num_input_tokens"] == count_tokens(PROMPT)


async def test_trtllm_counts_only_when_asked_and_echo_by_default(
        http: aiohttp.ClientSession) -> None:
    status, _, raw = await post(http, "/v2/models/trt/generate",
                                {"text_input": PROMPT, "max_tokens": 64})
    body = json.loads(raw)
    assert status == 200 and "num_output_tokens" not in body and "num_input_tokens" not in body
    assert body["text_output"] == PROMPT + complete(PROMPT, max_tokens=64).text


async def test_trtllm_stop_word_stays_at_the_end(http: aiohttp.ClientSession) -> None:
    words = complete(PROMPT, max_tokens=64).text.split()
    index = next(i for i in range(3, len(words)) if words[i] not in " ".join(words[:i]))
    stop = " " + words[index]
    _, _, raw = await post(http, "/v2/models/trt/generate", trt_body(stop_words=[stop, "zz"]))
    body = json.loads(raw)
    assert body["text_output"] == " ".join(words[: index + 1])
    assert body["num_output_tokens"] == index + 1 < 64
    _, _, raw = await post(http, "/v2/models/trt/generate_stream",
                           trt_body(True, stop_words=[stop]))
    events = sse_events(raw)
    assert events[-1]["text_output"] == stop
    assert "".join(e["text_output"] for e in events) == body["text_output"]
    # An empty stop word list entry means none, as in the README example.
    _, _, raw = await post(http, "/v2/models/trt/generate", trt_body(stop_words=""))
    assert json.loads(raw)["text_output"] == complete(PROMPT, max_tokens=64).text


async def test_trtllm_stream_is_deltas_with_counts(http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await post(http, "/v2/models/trt/generate_stream", trt_body(True))
    assert status == 200 and ctype == SSE
    events = sse_events(raw)
    expected = complete(PROMPT, max_tokens=64)
    assert [e["text_output"] for e in events] == list(expected.pieces)
    assert all(e["num_output_tokens"] == 1 and "finish_reason" not in e for e in events)
    assert all(e["output_log_probs"] == 0.0 for e in events)  # one element: a bare value


async def test_trtllm_stream_needs_a_decoupled_model(http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await post(http, "/v2/models/trtc/generate_stream", trt_body(True))
    assert status == 500 and ctype == SSE
    assert sse_events(raw) == [{"error": "Streaming is only supported in decoupled mode."}]
    status, _, raw = await post(http, "/v2/models/trtc/generate", trt_body())
    assert status == 200 and json.loads(raw)["num_output_tokens"] > 0


async def test_trtllm_seed_changes_the_text(http: aiohttp.ClientSession) -> None:
    _, _, a = await post(http, "/v2/models/trt/generate", trt_body(seed=1))
    _, _, b = await post(http, "/v2/models/trt/generate", trt_body(seed=2))
    assert json.loads(a)["text_output"] != json.loads(b)["text_output"]


async def test_trtllm_legacy_names() -> None:
    runner, port = await start_mock_triton(models=("old:tensorrtllm",), trtllm_legacy=True)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            async with http.get("/v2/models/old") as r:
                names = {t["name"] for t in (await r.json())["inputs"]}
            assert {"random_seed", "min_length"} <= names
            assert not {"seed", "min_tokens", "return_num_output_tokens"} & names
            # Newer names are not inputs: they become request parameters, silently ignored.
            body = {**trt_body(), "seed": 1}
            status, _, raw = await post(http, "/v2/models/old/generate", body)
            answer = json.loads(raw)
            assert status == 200 and "num_output_tokens" not in answer
            assert answer["text_output"] == complete(PROMPT, max_tokens=64).text
            _, _, raw = await post(http, "/v2/models/old/generate",
                                   {**trt_body(), "random_seed": 1})
            assert json.loads(raw)["text_output"] == complete(PROMPT, max_tokens=64,
                                                              seed=1).text
    finally:
        await runner.cleanup()


# --- generic -----------------------------------------------------------------------------------


async def test_generic_takes_text_input_and_parameters(http: aiohttp.ClientSession) -> None:
    body = {"text_input": PROMPT, "parameters": {"max_tokens": 6, "temperature": 0.2}}
    status, _, raw = await post(http, "/v2/models/gen/generate", body)
    assert status == 200
    assert json.loads(raw) == {"model_name": "gen", "model_version": "1",
                               "text_output": complete(PROMPT, max_tokens=6).text}
    status, _, raw = await post(http, "/v2/models/gen/generate",
                                {"text_input": PROMPT, "parameters": {"max_tokens": "6"}})
    assert status == 400 and "max_tokens" in json.loads(raw)["error"]


async def test_generic_stop_words_is_an_input_even_inside_parameters(
        http: aiohttp.ClientSession) -> None:
    words = complete(PROMPT, max_tokens=64).text.split()
    index = next(i for i in range(3, len(words)) if words[i] not in " ".join(words[:i]))
    # A key inside "parameters" that names an input becomes that tensor, so a list is fine...
    body = {"text_input": PROMPT, "parameters": {"max_tokens": 64, "stop_words": [words[index]],
                                                 "exclude_input_in_output": True}}
    status, _, raw = await post(http, "/v2/models/gen/generate", body)
    assert status == 200
    assert json.loads(raw)["text_output"] == " ".join(words[:index]) + " "
    # ...while a list under any other name is refused before the model runs.
    body["parameters"]["stop"] = ["x"]
    status, _, raw = await post(http, "/v2/models/gen/generate", body)
    assert (status, json.loads(raw)["error"]) == (
        400, "Converting keyword: 'parameters': " + INVALID.format("stop"))


async def test_generic_stream_depends_on_the_transaction_policy(
        http: aiohttp.ClientSession) -> None:
    body = {"text_input": PROMPT, "parameters": {"max_tokens": 6, "stream": True}}
    _, _, raw = await post(http, "/v2/models/gen/generate_stream", body)
    assert [e["text_output"] for e in sse_events(raw)] == [complete(PROMPT, max_tokens=6).text]
    _, _, raw = await post(http, "/v2/models/gend/generate_stream", body)
    assert [e["text_output"] for e in sse_events(raw)] == list(
        complete(PROMPT, max_tokens=6).pieces)


# --- determinism and unicode -------------------------------------------------------------------


async def test_two_servers_give_identical_bytes(http: aiohttp.ClientSession) -> None:
    runner, port = await start_mock_triton(models=MODELS)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as other:
            for path, body in (("/v2/models/vm/generate_stream", vllm_body(stream=True)),
                               ("/v2/models/trt/generate", trt_body()),
                               ("/v2/models/vm/generate", vllm_body(n=3))):
                assert await post(http, path, body) == await post(other, path, body)
    finally:
        await runner.cleanup()


async def test_unicode_prompts_and_answers_round_trip(http: aiohttp.ClientSession) -> None:
    prompts = ["Grüße aus Köln 👋", "日本語で答えて", "\u0645\u0631\u062d\u0628\u0627"] + [
        f"question {i}" for i in range(10)]
    answers = ""
    for prompt in prompts:
        _, _, raw = await post(http, "/v2/models/vm/generate", vllm_body(prompt))
        body = json.loads(raw.decode("utf-8"))
        assert body["num_input_tokens"] == len(prompt.split())
        assert body["text_output"] == complete(prompt, max_tokens=64).text
        answers += body["text_output"]
    assert not answers.isascii()
