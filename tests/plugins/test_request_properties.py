"""Property tests: turn structure for any valid chat, and no exception for any body."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apisix_openai_triton.plugins.errors import OpenAIError
from apisix_openai_triton.plugins.request_conf import RequestConf, parse_request_conf
from apisix_openai_triton.plugins.request_transform import transform
from apisix_openai_triton.plugins.state import decode_state

HOSTILE = ["<|eot_id|>", "<|start_header_id|>", "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]",
           "</s>", "<s>", "<start_of_turn>", "<end_of_turn>", "＜｜eot_id｜＞", "\n\n", " "]
TEXT = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(HOSTILE)), max_size=5).map("".join)
BACKENDS = ["vllm", "tensorrtllm", "generic"]

# Marker that opens one turn, per template (the generation prompt opens one more).
OPENER = {"llama3": "<|start_header_id|>", "llama3.1": "<|start_header_id|>",
          "chatml": "<|im_start|>", "gemma": "<start_of_turn>", "mistral-v1": "[INST]",
          "mistral-v3": "[INST]", "mistral-tekken": "[INST]"}
CONFS = {(t, b): parse_request_conf(orjson.dumps({"model": "m", "template": t, "backend": b,
                                                  "bos": True}).decode())
         for t in OPENER for b in BACKENDS}


@st.composite
def conversation(draw: st.DrawFn, template: str) -> list[dict[str, Any]]:
    """A conversation valid for ``template`` (alternation rules where the template has them)."""
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 2))):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])),
                         "content": draw(TEXT)})
    turns = draw(st.integers(1, 6))
    strict = template.startswith(("mistral", "gemma"))
    for i in range(turns):
        if strict:
            role = "user" if i % 2 == 0 else "assistant"
        else:
            role = draw(st.sampled_from(["user", "assistant", "system", "tool"]))
        content: Any = draw(TEXT)
        if draw(st.booleans()):
            content = [{"type": "text", "text": content}]
        message = {"role": role, "content": content}
        if role == "tool":
            message["tool_call_id"] = "c"
        messages.append(message)
    if strict and messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": draw(TEXT)})
    return messages


def expected_turns(template: str, messages: list[dict[str, Any]]) -> int:
    roles = [m["role"] for m in messages]
    if template.startswith("mistral"):
        return roles.count("user")  # one [INST] per user turn, no generation marker
    if template == "gemma":
        leading = next(i for i, r in enumerate(roles) if r not in ("system", "developer"))
        return len(roles) - leading + 1
    if template == "llama3.1" and roles[0] not in ("system", "developer"):
        return len(roles) + 2  # the date block is always there
    return len(roles) + 1


def check_body(backend: str, body: dict[str, Any], prompt_holder: list[str]) -> None:
    if backend == "vllm":
        assert body["exclude_input_in_output"] is True
        sampling = orjson.loads(body["sampling_parameters"])
        assert sampling["max_tokens"] >= 1
        prompt_holder.append(body["text_input"])
    elif backend == "tensorrtllm":
        assert body["max_tokens"] >= 1 and body["exclude_input_in_output"] is True
        assert all(isinstance(s, str) for s in body.get("stop_words", []))
        prompt_holder.append(body["text_input"])
    else:
        assert set(body) == {"text_input", "parameters"}
        assert all(isinstance(v, (str, int, float, bool, list)) for v in body["parameters"].values())
        prompt_holder.append(body["text_input"])


@pytest.mark.parametrize("template", list(OPENER))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_turn_per_message_plus_generation_prompt(template: str, data: st.DataObject) -> None:
    messages = data.draw(conversation(template))
    backend = data.draw(st.sampled_from(BACKENDS))
    stream = data.draw(st.booleans())
    upstream = transform(CONFS[(template, backend)], "chat",
                         orjson.dumps({"model": "m", "messages": messages, "stream": stream}))
    prompts: list[str] = []
    check_body(backend, orjson.loads(upstream.body), prompts)
    assert prompts[0].count(OPENER[template]) == expected_turns(template, messages)
    if template.startswith("mistral"):
        assert prompts[0].count("</s>") == [m["role"] for m in messages].count("assistant")
    state = decode_state(upstream.state)
    assert state.stream is stream and upstream.path.endswith(
        "/generate_stream" if stream else "/generate")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
FIELDS = ["model", "messages", "prompt", "temperature", "top_p", "n", "stop", "stream",
          "stream_options", "max_tokens", "max_completion_tokens", "seed", "tools", "tool_choice",
          "presence_penalty", "frequency_penalty", "logprobs", "response_format", "echo"]
LOOSE_CONF = parse_request_conf('{"model": "m", "backend": "vllm", "template": "llama3.1"}')
STRICT_CONF = parse_request_conf('{"models": {"a": "b"}, "template": "gemma", '
                                 '"special_tokens": "reject", "max_messages": 3}')


def outcome(conf: RequestConf, endpoint: str, body: bytes) -> int:
    try:
        upstream = transform(conf, endpoint, body)  # type: ignore[arg-type]
    except OpenAIError as err:
        envelope = orjson.loads(err.body())["error"]
        assert 400 <= err.status < 500 and envelope["type"] == "invalid_request_error"
        return err.status
    decode_state(upstream.state)
    assert orjson.loads(upstream.body)
    return 200


@settings(max_examples=1500, deadline=None)
@given(st.one_of(JSON, st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6)),
       st.sampled_from(["chat", "completions"]), st.booleans())
def test_any_json_body_gives_a_request_or_a_4xx_envelope(doc: Any, endpoint: str,
                                                         strict: bool) -> None:
    outcome(STRICT_CONF if strict else LOOSE_CONF, endpoint, json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_a_request_or_a_4xx_envelope(raw: bytes) -> None:
    outcome(LOOSE_CONF, "chat", raw)


GENERIC = parse_request_conf('{"model": "m"}')
VALID = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
BAD_VALUES: dict[str, list[Any]] = {
    "messages": [None, [], {}, "hi", [1], [{"role": "x", "content": "a"}], [{"role": "user"}],
                 [{"role": "user", "content": 1}], [{"role": "user", "content": [{"type": "x"}]}]],
    "temperature": [-0.01, 2.01, "1", True, [1], {}],
    "top_p": [-1, 1.01, "0.5", False],
    "presence_penalty": [-2.5, 3, "0"],
    "frequency_penalty": [2.0001, -9, "x"],
    "n": [0, -1, 129, 1.5, "2"],
    "max_tokens": [0, -5, 1.5, "10", True],
    "max_completion_tokens": [0, "1", [1]],
    "seed": [1.5, "1", 2**63, 2**64 - 1],
    "stop": [1, ["a"] * 5, [1], [""], {"a": 1}],
    "stream": ["true", 1, [True]],
    "stream_options": [{"include_usage": True}, "x", 3],
    "logprobs": [True],
    "logit_bias": [{"5": 1}],
    "tools": [[{"type": "function", "function": {"name": "f"}}], "x"],
    "tool_choice": ["required", {"type": "function", "function": {"name": "f"}}, 3],
    "response_format": [{"type": "json_object"}, "json", 3],
    "model": [1, ["m"], {"a": 1}],
}


@pytest.mark.timeout(400)
@settings(max_examples=10000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(BAD_VALUES)), st.just(None), min_size=1, max_size=4)
       .flatmap(lambda keys: st.fixed_dictionaries(
           {k: st.sampled_from(BAD_VALUES[k]) for k in keys})))
def test_ten_thousand_invalid_bodies_all_give_4xx(bad: dict[str, Any]) -> None:
    assert outcome(GENERIC, "chat", orjson.dumps({**VALID, **bad})) == 400
