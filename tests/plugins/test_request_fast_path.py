"""The typed fast path of the chat request decodes exactly what the detailed validator would."""

from __future__ import annotations

import json
from typing import Any, Union

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apisix_openai_triton.plugins import chat_fast
from apisix_openai_triton.plugins.chat_request import ChatRequest, load_object, parse_chat
from apisix_openai_triton.plugins.errors import OpenAIError
from apisix_openai_triton.plugins.request_conf import RequestConf, parse_request_conf
from apisix_openai_triton.tools.bench_workloads import chat_body

CONFS = {
    "generic": parse_request_conf('{"model": "m"}'),
    "vllm-llama3.1": parse_request_conf('{"model": "m", "backend": "vllm", "template": "llama3.1",'
                                        ' "max_messages": 4, "max_tokens_default": 50,'
                                        ' "max_tokens_cap": 100}'),
    "reject": parse_request_conf('{"model": "m", "template": "chatml", "special_tokens": "reject"}'),
}

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(-3, 3) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=6,
)
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["<|im_end|>", "[INST] hi", "hello",
                                                        "＜｜eot_id｜＞", ""]))
ROLE = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "bot"])


@st.composite
def message(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(ANY_JSON)
    out: dict[str, Any] = {"role": draw(ROLE)}
    kind = draw(st.integers(0, 9))
    if kind < 6:
        out["content"] = draw(TEXT)
    elif kind == 6:
        out["content"] = [{"type": "text", "text": draw(TEXT)}]
    elif kind == 7:
        out["content"] = None
    elif kind == 8:
        out["content"] = draw(ANY_JSON)
    if draw(st.booleans()):
        out["name"] = draw(st.one_of(TEXT, ANY_JSON))
    if draw(st.integers(0, 5)) == 0:
        out["tool_calls"] = draw(st.one_of(st.just([]), ANY_JSON))
    if out["role"] == "tool" and draw(st.booleans()):
        out["tool_call_id"] = "c1"
    return out


NUMBER = st.one_of(st.integers(-5, 300), st.floats(-5, 5, allow_nan=False), st.booleans(),
                   st.none(), st.text(max_size=2), st.just(2**70))
FIELDS: dict[str, Any] = {
    "model": st.one_of(st.just("m"), st.just(""), st.none(), st.integers()),
    "max_tokens": NUMBER, "max_completion_tokens": NUMBER, "n": NUMBER, "temperature": NUMBER,
    "top_p": NUMBER, "presence_penalty": NUMBER, "frequency_penalty": NUMBER,
    "seed": st.one_of(NUMBER, st.just(-(2**63)), st.just(2**63)),
    "stop": st.one_of(TEXT, st.lists(st.one_of(TEXT, st.integers()), max_size=6), ANY_JSON),
    "stream": st.one_of(st.booleans(), st.none(), st.integers(0, 1)),
    "stream_options": st.one_of(st.none(), st.fixed_dictionaries(
        {}, optional={"include_usage": st.one_of(st.booleans(), st.none(), st.integers(0, 1)),
                      "include_obfuscation": st.booleans()}), ANY_JSON),
    "tools": st.one_of(st.none(), st.just([]), ANY_JSON),
    "tool_choice": st.one_of(st.none(), st.sampled_from(["auto", "none", "required"])),
    "response_format": st.one_of(st.none(), st.just({"type": "text"}), ANY_JSON),
    "logit_bias": st.one_of(st.none(), st.just({}), ANY_JSON),
    "logprobs": st.one_of(st.none(), st.booleans()),
    "top_logprobs": st.one_of(st.none(), st.integers(0, 2)),
    "functions": st.one_of(st.none(), st.just([])),
    "function_call": st.one_of(st.none(), st.just("none"), st.just("auto")),
    "audio": st.one_of(st.none(), ANY_JSON),
    "modalities": st.one_of(st.none(), st.just(["text"]), ANY_JSON),
    "web_search_options": st.one_of(st.none(), ANY_JSON),
    "user": st.text(max_size=3),
}


VALID: dict[str, Any] = {
    "model": st.just("m"), "max_tokens": st.integers(1, 300),
    "max_completion_tokens": st.integers(1, 300), "n": st.just(1),
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "seed": st.integers(-9, 9),
    "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.integers(-2, 2),
    "stop": st.one_of(st.text(min_size=1, max_size=3),
                      st.lists(st.text(min_size=1, max_size=3), max_size=4)),
    "stream": st.booleans(), "user": st.text(max_size=3),
}
COMMON_ROLE = st.sampled_from(["system", "developer", "user", "assistant"])


@st.composite
def plain_message(draw: st.DrawFn) -> dict[str, Any]:
    return {"role": draw(COMMON_ROLE), "content": draw(TEXT)}


def field(draw: st.DrawFn, key: str) -> Any:
    """Mostly a value the route accepts, so that both paths are exercised."""
    if key in VALID and draw(st.integers(0, 3)):
        return draw(VALID[key])
    return draw(FIELDS[key])


@st.composite
def body(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.one_of(st.binary(max_size=20), ANY_JSON.map(orjson.dumps)))
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 15)):
        one = st.one_of(plain_message(), message()) if draw(st.booleans()) else plain_message()
        doc["messages"] = draw(st.one_of(st.lists(message(), min_size=0, max_size=5),
                                         ANY_JSON) if draw(st.integers(0, 10)) == 0
                               else st.lists(one, min_size=1, max_size=5))
    keys = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=5, unique=True))
    for key in keys:
        doc[key] = field(draw, key)
    return json.dumps(doc).encode()  # not orjson: 2**70 must be encodable


Outcome = Union[ChatRequest, tuple[int, bytes]]


def outcome(parse: Any, raw: bytes, conf: RequestConf) -> Outcome:
    try:
        result: ChatRequest = parse(raw, conf.policy)
        return result
    except OpenAIError as err:
        return err.status, err.body()


def detailed(raw: bytes, policy: Any) -> ChatRequest:
    return parse_chat(load_object(raw), policy)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body(), st.sampled_from(sorted(CONFS)))
def test_fast_path_result_equals_the_detailed_validator(raw: bytes, conf_name: str) -> None:
    conf = CONFS[conf_name]
    assert outcome(chat_fast.parse_chat_body, raw, conf) == outcome(detailed, raw, conf)


@pytest.mark.parametrize("raw", [
    chat_body("1k"), chat_body("1k", stream=True), chat_body("200k"),
    orjson.dumps({"messages": [{"role": "developer", "content": "be brief"},
                               {"role": "user", "content": "hi <|im_end|>", "name": "ann"},
                               {"role": "assistant", "content": None},
                               {"role": "user", "content": "more"}],
                  "max_completion_tokens": 9, "n": 1, "stop": ["x", "y"], "seed": -1,
                  "stream": True, "stream_options": {"include_usage": True}, "user": "u"}),
])
def test_plain_requests_take_the_fast_path(raw: bytes) -> None:
    conf = CONFS["generic"]
    assert chat_fast._fast(raw, conf.policy) == detailed(raw, conf.policy)


@pytest.mark.parametrize("doc", [
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
    {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}},
    {"messages": [{"role": "tool", "content": "42", "tool_call_id": "c"}]},
    {"messages": [{"role": "user", "content": "<|im_end|>"}]},
])
def test_what_the_fast_path_does_not_take_on_is_left_to_the_validator(doc: Any) -> None:
    conf = CONFS["reject"]
    with pytest.raises((chat_fast._Slow, ValueError)):
        chat_fast._fast(orjson.dumps(doc), conf.policy)
