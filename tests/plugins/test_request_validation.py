"""Every refusal of the request phase: status, type, param and code of the OpenAI envelope."""

from __future__ import annotations

from typing import Any, Optional

import orjson
import pytest

from apisix_openai_triton.plugins.errors import OpenAIError
from apisix_openai_triton.plugins.request_conf import parse_request_conf
from apisix_openai_triton.plugins.request_transform import match_endpoint, models_answer, transform

GENERIC = parse_request_conf('{"model": "m"}')
VLLM = parse_request_conf('{"model": "m", "backend": "vllm", "template": "llama3.1"}')
MAPPED = parse_request_conf('{"models": {"gpt-x": "llama", "small": "qwen"}}')
MAPPED_DEFAULT = parse_request_conf('{"models": {"gpt-x": "llama"}, "default_model": "gpt-x"}')
U = {"role": "user", "content": "hi"}


def refusal(body: Any, conf: Any = GENERIC, endpoint: str = "chat") -> OpenAIError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(OpenAIError) as err:
        transform(conf, endpoint, raw)  # type: ignore[arg-type]
    envelope = orjson.loads(err.value.body())
    assert set(envelope["error"]) == {"message", "type", "param", "code"}
    return err.value


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [U], **fields}


CASES: list[tuple[str, Any, Optional[str], str]] = [
    # name, body, param, code
    ("not json", b"{nope", None, "invalid_json"),
    ("empty body", b"", None, "invalid_json"),
    ("array body", b"[1]", None, "invalid_json"),
    ("string body", b'"x"', None, "invalid_json"),
    ("messages missing", {"model": "m"}, "messages", "missing_required_parameter"),
    ("messages empty", {"model": "m", "messages": []}, "messages", "empty_array"),
    ("messages not array", {"model": "m", "messages": {}}, "messages", "invalid_type"),
    ("message not object", {"messages": ["hi"]}, "messages[0]", "invalid_type"),
    ("role missing", {"messages": [{"content": "x"}]}, "messages[0].role",
     "missing_required_parameter"),
    ("role unknown", {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role",
     "invalid_value"),
    ("role function", {"messages": [{"role": "function", "content": "x", "name": "f"}]},
     "messages[0].role", "invalid_value"),
    ("role not string", {"messages": [{"role": 1, "content": "x"}]}, "messages[0].role",
     "invalid_type"),
    ("content missing", {"messages": [{"role": "user"}]}, "messages[0].content",
     "missing_required_parameter"),
    ("content number", {"messages": [{"role": "user", "content": 3}]}, "messages[0].content",
     "invalid_type"),
    ("image part", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[1].type", "unsupported_content"),
    ("part text not string", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": 5}]}]}, "messages[0].content[0].text", "invalid_type"),
    ("part not object", {"messages": [{"role": "user", "content": ["a"]}]},
     "messages[0].content[0]", "invalid_type"),
    ("name not string", {"messages": [{"role": "user", "content": "a", "name": 3}]},
     "messages[0].name", "invalid_type"),
    ("tool without id", {"messages": [U, {"role": "tool", "content": "r"}]},
     "messages[1].tool_call_id", "invalid_type"),
    ("temperature high", chat(temperature=2.5), "temperature", "invalid_value"),
    ("temperature negative", chat(temperature=-0.1), "temperature", "invalid_value"),
    ("temperature string", chat(temperature="hot"), "temperature", "invalid_type"),
    ("temperature bool", chat(temperature=True), "temperature", "invalid_type"),
    ("top_p high", chat(top_p=1.5), "top_p", "invalid_value"),
    ("presence low", chat(presence_penalty=-2.1), "presence_penalty", "invalid_value"),
    ("frequency high", chat(frequency_penalty=2.1), "frequency_penalty", "invalid_value"),
    ("max_tokens zero", chat(max_tokens=0), "max_tokens", "invalid_value"),
    ("max_completion_tokens float", chat(max_completion_tokens=1.5), "max_completion_tokens",
     "invalid_type"),
    ("n zero", chat(n=0), "n", "invalid_value"),
    ("n two on generic", chat(n=2), "n", "unsupported_parameter"),
    ("seed string", chat(seed="1"), "seed", "invalid_type"),
    ("seed too big", chat(seed=2**63), "seed", "invalid_value"),
    ("five stops", chat(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_value"),
    ("stop number", chat(stop=3), "stop", "invalid_type"),
    ("stop item number", chat(stop=["a", 3]), "stop[1]", "invalid_type"),
    ("stop empty string", chat(stop=[""]), "stop[0]", "invalid_value"),
    ("stream string", chat(stream="yes"), "stream", "invalid_type"),
    ("stream_options without stream", chat(stream_options={"include_usage": True}),
     "stream_options", "invalid_value"),
    ("include_usage string", chat(stream=True, stream_options={"include_usage": "y"}),
     "stream_options.include_usage", "invalid_type"),
    ("logprobs", chat(logprobs=True), "logprobs", "unsupported_parameter"),
    ("top_logprobs", chat(top_logprobs=3), "top_logprobs", "unsupported_parameter"),
    ("logit_bias", chat(logit_bias={"1": 5}), "logit_bias", "unsupported_parameter"),
    ("tools on llama3", chat(tools=[{"type": "function", "function": {"name": "f"}}]), "tools",
     "unsupported_parameter"),
    ("tool_calls on llama3", {"messages": [U, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
     "messages[1].tool_calls", "unsupported_parameter"),
    ("tool_choice required", chat(tool_choice="required"), "tool_choice", "unsupported_parameter"),
    ("json_schema", chat(response_format={"type": "json_schema", "json_schema": {}}),
     "response_format", "unsupported_parameter"),
    ("json_object", chat(response_format={"type": "json_object"}), "response_format",
     "unsupported_parameter"),
    ("functions", chat(functions=[{"name": "f"}]), "functions", "unsupported_parameter"),
    ("audio", chat(audio={"voice": "x"}), "audio", "unsupported_parameter"),
    ("modalities audio", chat(modalities=["text", "audio"]), "modalities",
     "unsupported_parameter"),
    ("model not string", {"model": 5, "messages": [U]}, "model", "invalid_type"),
]


@pytest.mark.parametrize("name, body, param, code", CASES, ids=[c[0] for c in CASES])
def test_chat_refusals(name: str, body: Any, param: Optional[str], code: str) -> None:
    err = refusal(body)
    assert (err.status, err.type, err.param, err.code) == (400, "invalid_request_error", param,
                                                           code)


def test_n_above_one_is_fine_on_vllm_but_not_above_128() -> None:
    transform(VLLM, "chat", orjson.dumps(chat(n=4)))
    assert refusal(chat(n=129), VLLM).param == "n"


def test_tools_are_fine_on_llama31() -> None:
    transform(VLLM, "chat", orjson.dumps(chat(tools=[{"type": "function",
                                                      "function": {"name": "f"}}])))
    err = refusal(chat(tools=[{"type": "code", "function": {"name": "f"}}]), VLLM)
    assert err.param == "tools[0].type"
    err = refusal({"messages": [U, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}, VLLM)
    assert err.param == "messages[1].tool_calls[0].function.arguments"


def test_body_over_the_limit_is_413_content_too_large() -> None:
    small = parse_request_conf('{"model": "m", "max_body_bytes": 2048}')
    err = refusal(chat(messages=[{"role": "user", "content": "x" * 3000}]), small)
    assert (err.status, err.type, err.code) == (413, "invalid_request_error", "content_too_large")


def test_too_many_messages_and_prompt_too_long() -> None:
    limited = parse_request_conf('{"model": "m", "max_messages": 2, "max_prompt_chars": 100}')
    assert refusal(chat(messages=[U, U, U]), limited).code == "array_above_max_length"
    err = refusal(chat(messages=[{"role": "user", "content": "y" * 200}]), limited)
    assert (err.status, err.param, err.code) == (400, "messages", "context_length_exceeded")


def test_unknown_model_is_404_model_not_found_on_a_mapped_route() -> None:
    err = refusal({"model": "gpt-9", "messages": [U]}, MAPPED)
    assert (err.status, err.type, err.param, err.code) == (404, "invalid_request_error", "model",
                                                           "model_not_found")
    assert refusal({"messages": [U]}, MAPPED).param == "model"
    assert refusal({"model": "gpt-9", "messages": [U]}, MAPPED_DEFAULT).status == 404


def test_unknown_fields_and_harmless_metadata_are_ignored() -> None:
    transform(GENERIC, "chat", orjson.dumps(chat(
        user="u1", metadata={"a": "b"}, store=False, service_tier="auto", whatever=[1, 2],
        parallel_tool_calls=True, reasoning_effort="low", logprobs=False, tool_choice="none",
        response_format={"type": "text"}, stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False})))


COMPLETION_CASES: list[tuple[str, Any, Optional[str]]] = [
    ("prompt missing", {"model": "m"}, "prompt"),
    ("prompt number", {"prompt": 3}, "prompt"),
    ("token ids", {"prompt": [1, 2, 3]}, "prompt"),
    ("token id batches", {"prompt": [[1, 2], [3]]}, "prompt"),
    ("two prompts", {"prompt": ["a", "b"]}, "prompt"),
    ("list item number", {"prompt": [None]}, "prompt[0]"),
    ("echo", {"prompt": "a", "echo": True}, "echo"),
    ("best_of", {"prompt": "a", "best_of": 3}, "best_of"),
    ("suffix", {"prompt": "a", "suffix": "z"}, "suffix"),
    ("logprobs", {"prompt": "a", "logprobs": 2}, "logprobs"),
    ("max_tokens", {"prompt": "a", "max_tokens": -1}, "max_tokens"),
]


@pytest.mark.parametrize("name, body, param", COMPLETION_CASES,
                         ids=[c[0] for c in COMPLETION_CASES])
def test_completion_refusals(name: str, body: Any, param: Optional[str]) -> None:
    err = refusal(body, endpoint="completions")
    assert (err.status, err.param) == (400, param)


def test_completions_can_be_switched_off() -> None:
    off = parse_request_conf('{"model": "m", "completions": false}')
    assert refusal({"prompt": "a"}, off, "completions").status == 404


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/chat/completions", 405),
    ("PUT", "/v1/completions", 405),
    ("POST", "/v1/models", 405),
    ("POST", "/v1/embeddings", 404),
    ("GET", "/", 404),
])
def test_wrong_method_or_path(method: str, path: str, status: int) -> None:
    with pytest.raises(OpenAIError) as err:
        match_endpoint(method, path)
    assert (err.value.status, err.value.type) == (status, "invalid_request_error")


@pytest.mark.parametrize("path, endpoint, model", [
    ("/v1/chat/completions", "chat", None),
    ("/llm/team-a/v1/chat/completions/", "chat", None),
    ("/v1/completions", "completions", None),
    ("/openai/v1/models", "models", None),
    ("/v1/models/meta-llama/Llama-3.1-8B", "model", "meta-llama/Llama-3.1-8B"),
])
def test_endpoint_is_the_path_suffix(path: str, endpoint: str, model: Optional[str]) -> None:
    method = "GET" if endpoint.startswith("model") else "POST"
    assert match_endpoint(method, path) == (endpoint, model)


def test_models_listing_and_retrieval() -> None:
    listing = orjson.loads(models_answer(MAPPED, None))
    assert listing["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listing["data"]] == [
        ("gpt-x", "model", "triton"), ("small", "model", "triton")]
    assert isinstance(listing["data"][0]["created"], int)
    assert orjson.loads(models_answer(MAPPED, "small"))["id"] == "small"
    with pytest.raises(OpenAIError) as err:
        models_answer(MAPPED, "nope")
    assert (err.value.status, err.value.code) == (404, "model_not_found")
    single = parse_request_conf('{"model": "llama", "served_model_name": "Llama-3"}')
    assert [m["id"] for m in orjson.loads(models_answer(single, None))["data"]] == ["Llama-3"]
