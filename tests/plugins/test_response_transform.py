"""Triton answer -> OpenAI answer, for each input shape; every output checked with the SDK's types."""

from __future__ import annotations

import gzip
import logging
import zlib
from typing import Any, Optional

import orjson
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from apisix_openai_triton.plugins.response_conf import ResponseConf, parse_response_conf
from apisix_openai_triton.plugins.response_transform import Converted, convert
from apisix_openai_triton.plugins.state import CallState

CONF = parse_response_conf("{}")


def state(
    *, endpoint: str = "chat", stream: bool = False, include_usage: bool = False, n: int = 1,
    max_tokens: int = 16, backend: str = "vllm", api: Optional[str] = None,
    stop: tuple[str, ...] = (), model: str = "my-model",
) -> CallState:
    api = api or ("generate_stream" if stream else "generate")
    prefix = "chatcmpl-" if endpoint == "chat" else "cmpl-"
    return CallState(model, endpoint, prefix + "abc123", 1_700_000_000, stream, include_usage,  # type: ignore[arg-type]
                     n, max_tokens, backend, api, stop)  # type: ignore[arg-type]


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


def stream_objects(body: bytes) -> list[dict[str, Any]]:
    """The JSON of every event of one of our streams; asserts the framing and the [DONE] end."""
    assert body.endswith(b"data: [DONE]\n\n")
    blocks = body.split(b"\n\n")
    assert blocks.pop() == b""
    assert blocks.pop() == b"data: [DONE]"
    assert all(b.startswith(b"data: ") and b"\n" not in b for b in blocks)
    return [orjson.loads(b[6:]) for b in blocks]


def validate_stream(st: CallState, body: bytes) -> list[dict[str, Any]]:
    """Every chunk through the SDK's own types (or the error envelope shape), with common fields."""
    objects = stream_objects(body)
    for obj in objects:
        if "error" in obj:
            assert set(obj["error"]) == {"message", "type", "param", "code"}
            continue
        assert obj["id"] == st.id and obj["created"] == st.created and obj["model"] == st.model
        if st.endpoint == "chat":
            ChatCompletionChunk.model_validate(obj)
        else:
            # OpenAI's legacy stream sends finish_reason null until the end, which the SDK's
            # Completion type (made for whole answers) does not allow: check it separately.
            probe = orjson.loads(orjson.dumps(obj))
            for choice in probe["choices"]:
                if choice["finish_reason"] is None:
                    choice["finish_reason"] = "stop"
            Completion.model_validate(probe)
            assert obj["object"] == "text_completion"
        assert ("usage" in obj) == st.include_usage
    return objects


def content_of(objects: list[dict[str, Any]], index: int = 0) -> str:
    out = []
    for obj in objects:
        for c in obj.get("choices", []):
            if c["index"] == index:
                out.append(c["delta"].get("content") or "" if "delta" in c else c["text"])
    return "".join(out)


def finish_of(objects: list[dict[str, Any]], index: int = 0) -> list[str]:
    return [c["finish_reason"] for o in objects for c in o.get("choices", [])
            if c["index"] == index and c["finish_reason"] is not None]


def run(st: CallState, body: bytes, status: int = 200, conf: ResponseConf = CONF, **kw: Any) -> Converted:
    return convert(conf, st, status, body, **kw)


def error_of(converted: Converted) -> dict[str, Any]:
    assert not converted.stream
    err = orjson.loads(converted.body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err  # type: ignore[no-any-return]


# --- non-stream --------------------------------------------------------------------------------


def test_generate_to_chat_completion_with_usage() -> None:
    st = state()
    out = run(st, orjson.dumps({"model_name": "llama", "model_version": "1", "text_output": "Hi there!",
                                "finish_reason": "stop", "num_input_tokens": 12, "num_output_tokens": 4}))
    assert out.status == 200 and not out.stream
    completion = ChatCompletion.model_validate_json(out.body)
    assert completion.id == "chatcmpl-abc123" and completion.object == "chat.completion"
    assert completion.model == "my-model" and completion.created == 1_700_000_000
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.message.content == "Hi there!"
    assert choice.finish_reason == "stop" and choice.logprobs is None
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.total_tokens) == (12, 4, 16)
    assert out.usage is not None and out.usage.total_tokens == 16


def test_usage_is_omitted_without_counts_never_zero() -> None:
    out = run(state(backend="tensorrtllm"), b'{"text_output":"Hi","num_input_tokens":0.0,"num_output_tokens":0.0}')
    obj = orjson.loads(out.body)
    assert "usage" not in obj and out.usage is None
    ChatCompletion.model_validate(obj)


def test_usage_needs_both_counts() -> None:
    out = run(state(), b'{"text_output":"Hi","num_output_tokens":1}')
    assert "usage" not in orjson.loads(out.body)
    out = run(state(), b'{"text_output":"Hi","num_output_tokens":1}', prompt_tokens=30)
    assert orjson.loads(out.body)["usage"] == {"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31}


@pytest.mark.parametrize("outputs, max_tokens, expected", [
    ({"finish_reason": "length"}, 16, "length"),          # vLLM says so
    ({"finish_reason": "stop", "num_output_tokens": 16}, 16, "stop"),  # vLLM wins over counts
    ({"num_output_tokens": 16}, 16, "length"),           # TRT-LLM: count reached max_tokens
    ({"num_output_tokens": 15}, 16, "stop"),
    ({}, 16, "stop"),                                     # nothing known
    ({"finish_reason": "None"}, 16, "stop"),
    ({"finish_reason": "weird", "num_output_tokens": 16}, 16, "stop"),
])
def test_finish_reason(outputs: dict[str, Any], max_tokens: int, expected: str) -> None:
    body = orjson.dumps({"text_output": "x", **outputs})
    out = run(state(max_tokens=max_tokens), body)
    assert ChatCompletion.model_validate_json(out.body).choices[0].finish_reason == expected


def test_stop_sequence_left_by_backend_is_trimmed_and_means_stop() -> None:
    st = state(stop=("</s>", "<|eot_id|>"), max_tokens=5)
    out = run(st, b'{"text_output":"The end.<|eot_id|>","num_output_tokens":5}')
    choice = ChatCompletion.model_validate_json(out.body).choices[0]
    assert choice.message.content == "The end." and choice.finish_reason == "stop"
    # only at the end
    out = run(st, b'{"text_output":"a </s> b","num_output_tokens":5}')
    choice = ChatCompletion.model_validate_json(out.body).choices[0]
    assert choice.message.content == "a </s> b" and choice.finish_reason == "length"


def test_vllm_abort_is_an_error() -> None:
    out = run(state(), b'{"text_output":"partial","finish_reason":"abort"}')
    err = error_of(out)
    assert out.status == 502 and err["type"] == "server_error"


def test_n_choices() -> None:
    body = orjson.dumps({"text_output": ["red", "green", "blue"], "finish_reason": ["stop", "length", "stop"],
                         "num_input_tokens": 3, "num_output_tokens": [1, 2, 1]})
    completion = ChatCompletion.model_validate_json(run(state(n=3), body).body)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert [c.message.content for c in completion.choices] == ["red", "green", "blue"]
    assert [c.finish_reason for c in completion.choices] == ["stop", "length", "stop"]
    assert completion.usage is not None and completion.usage.completion_tokens == 4


def test_infer_to_chat_completion() -> None:
    body = orjson.dumps({"model_name": "ensemble", "outputs": [
        {"name": "text_output", "datatype": "BYTES", "shape": [1, 1], "data": ["Bonjour"]},
        {"name": "num_input_tokens", "datatype": "INT32", "shape": [1, 1], "data": [5]},
        {"name": "num_output_tokens", "datatype": "INT32", "shape": [1, 1], "data": [8]},
    ]})
    completion = ChatCompletion.model_validate_json(run(state(api="infer", max_tokens=8), body).body)
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.total_tokens == 13


def test_completions_endpoint() -> None:
    out = run(state(endpoint="completions"), b'{"text_output":" world","num_input_tokens":2,"num_output_tokens":1}')
    completion = Completion.model_validate_json(out.body)
    assert completion.object == "text_completion" and completion.id == "cmpl-abc123"
    assert completion.choices[0].text == " world" and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 3


def test_unicode_content_round_trips() -> None:
    text = "Grüße, 世界! 😀 \u200b \\ \" \n\t"
    out = run(state(), orjson.dumps({"text_output": text}))
    assert ChatCompletion.model_validate_json(out.body).choices[0].message.content == text


def test_ten_megabyte_answer() -> None:
    text = "abcdefghij" * 1_000_000
    out = run(state(), orjson.dumps({"text_output": text, "num_input_tokens": 1, "num_output_tokens": 1}))
    assert out.status == 200
    assert ChatCompletion.model_validate_json(out.body).choices[0].message.content == text


def test_body_over_the_limit_is_a_502() -> None:
    conf = parse_response_conf('{"max_body_bytes": 2048}')
    out = run(state(), orjson.dumps({"text_output": "x" * 4096}), conf=conf)
    assert out.status == 502 and error_of(out)["type"] == "server_error"
    # an answer that grows past the limit when converted is refused too
    events = sse(*({"text_output": "x"} for _ in range(40)))
    assert len(events) < 2048
    out = run(state(stream=True), events, conf=conf)
    assert out.status == 502 and not out.stream


def test_gzip_and_deflate_bodies() -> None:
    raw = b'{"text_output":"zipped"}'
    for encoded, coding in ((gzip.compress(raw), "gzip"), (zlib.compress(raw), "deflate"),
                            (zlib.compress(raw)[2:-4], "deflate")):
        out = run(state(), encoded, content_encoding=coding)
        assert ChatCompletion.model_validate_json(out.body).choices[0].message.content == "zipped"
    assert run(state(), raw, content_encoding="identity").status == 200
    assert run(state(), raw, content_encoding="br").status == 502
    assert run(state(), b"not gzip", content_encoding="gzip").status == 502
    bomb = gzip.compress(b" " * (CONF.max_body_bytes + 10))
    assert run(state(), bomb, content_encoding="gzip").status == 502


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status, body, expected_status, expected_type, expected_code", [
    (400, b'{"error":"attempt to access JSON non-string as string"}', 400, "invalid_request_error", None),
    (422, b'{"error":"bad"}', 400, "invalid_request_error", None),
    (404, b'{"error":"Request for unknown model: \'llama\' is not found"}', 404, "invalid_request_error",
     "model_not_found"),
    (413, b'{"error":"request exceeds the maximum allowed input size"}', 413, "invalid_request_error",
     "content_too_large"),
    (429, b'{"error":"busy"}', 429, "rate_limit_error", "rate_limit_exceeded"),
    (429, b"<html>Too Many Requests</html>", 429, "rate_limit_error", "rate_limit_exceeded"),
    (500, b'{"error":"Error generating stream: /opt/secret/path failed"}', 502, "server_error", None),
    (503, b'{"error":"model not ready"}', 502, "server_error", None),
    (501, b'{"error":"HTTP end point doesn\'t support models with decoupled transaction policy"}', 502,
     "server_error", None),
    (403, b'{"error":"This API is restricted"}', 502, "server_error", None),
    (400, b"<html><body>400 Bad Request</body></html>", 502, "server_error", None),
    (404, b"<html>nginx 404</html>", 502, "server_error", None),
    (502, b"", 502, "server_error", None),
    (204, b"", 502, "server_error", None),
])
def test_upstream_errors(status: int, body: bytes, expected_status: int, expected_type: str,
                         expected_code: Optional[str], caplog: pytest.LogCaptureFixture) -> None:
    for stream in (False, True):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            out = run(state(stream=stream), body, status=status)
        assert out.status == expected_status and not out.stream
        err = error_of(out)
        assert err["type"] == expected_type and err["code"] == expected_code
        assert b"secret" not in out.body
        assert any(f"HTTP {status}" in r.getMessage() for r in caplog.records)
    if status == 404 and expected_code:
        assert err["param"] == "model" and "my-model" in err["message"]
    if expected_status == 400:
        assert "non-string" in err["message"] or "bad" in err["message"]


def test_upstream_400_message_hidden_when_conf_says_so() -> None:
    conf = parse_response_conf('{"expose_upstream_errors": false}')
    out = run(state(), b'{"error":"internal detail"}', status=400, conf=conf)
    assert out.status == 400 and "internal detail" not in error_of(out)["message"]


def test_error_log_is_capped_and_200_bodies_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        run(state(), b'{"error":"' + b"E" * 5000 + b'"}', status=500)
        run(state(), b'{"text_output": "SECRET COMPLETION", "oops', status=200)
        run(state(stream=True), sse({"text_output": "SECRET COMPLETION"}) + b"data: {", status=200)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "E" * 190 in text and "E" * 191 not in text  # 200 bytes, 10 of them `{"error":"`
    assert "SECRET" not in text


@pytest.mark.parametrize("body", [
    b"", b"<!DOCTYPE html><html><body>Bad gateway</body></html>", b'{"text_output": "trunc',
    b'{"error":"generate expects model to produce exactly 1 response"}', b'{"outputs": []}',
    b'{"text_output": []}',
])
def test_unusable_200_answers_are_502(body: bytes) -> None:
    for api in ("generate", "infer"):
        out = run(state(api=api), body)
        assert out.status == 502 and error_of(out)["type"] == "server_error"


# --- streams -----------------------------------------------------------------------------------


def test_stream_chat_full_sequence_with_usage() -> None:
    st = state(stream=True, include_usage=True)
    body = sse(
        {"model_name": "m", "text_output": "Hel", "finish_reason": "None", "num_input_tokens": 9, "num_output_tokens": 1},
        {"model_name": "m", "text_output": "lo", "finish_reason": "None", "num_input_tokens": 9, "num_output_tokens": 1},
        {"model_name": "m", "text_output": "!", "finish_reason": "stop", "num_input_tokens": 9, "num_output_tokens": 1},
    )
    out = run(st, body)
    assert out.status == 200 and out.stream
    objects = validate_stream(st, out.body)
    assert objects[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [o["choices"][0]["delta"] for o in objects[1:4]] == [{"content": "Hel"}, {"content": "lo"}, {"content": "!"}]
    assert objects[4]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert objects[5]["choices"] == [] and objects[5]["usage"] == {
        "prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert all(o["usage"] is None for o in objects[:5])
    assert len(objects) == 6


def test_stream_without_counts_has_no_usage_chunk() -> None:
    st = state(stream=True, include_usage=True, backend="tensorrtllm", max_tokens=2)
    objects = validate_stream(st, run(st, sse({"text_output": "a"}, {"text_output": "b"})).body)
    assert content_of(objects) == "ab"
    assert finish_of(objects) == ["stop"]  # nothing says the limit was reached
    assert all(o["usage"] is None for o in objects)


def test_stream_counts_summed_give_length() -> None:
    st = state(stream=True, backend="tensorrtllm", max_tokens=2)
    objects = validate_stream(st, run(st, sse({"text_output": "a", "num_output_tokens": 1},
                                              {"text_output": "b", "num_output_tokens": 1})).body)
    assert finish_of(objects) == ["length"]


def test_stream_unicode_split_across_events() -> None:
    st = state(stream=True)
    snow = "☃".encode()
    body = (b'data: {"text_output":"Snow' + snow[:1] + b'"}\n\n'
            b'data: {"text_output":"' + snow[1:] + b'man \\ud83d"}\n\n'
            b'data: {"text_output":"\\ude00"}\n\n'
            b'data: {"text_output":" fin \xe4\xb8\x96\xe7\x95\x8c"}\n\n')
    objects = validate_stream(st, run(st, body).body)
    assert content_of(objects) == "Snow☃man 😀 fin 世界"
    deltas = [c["delta"]["content"] for o in objects for c in o["choices"] if c["delta"].get("content")]
    assert deltas == ["Snow", "☃man ", "😀", " fin 世界"]


def test_stream_stop_sequence_spanning_events_is_trimmed() -> None:
    st = state(stream=True, stop=("<|eot_id|>",))
    body = sse({"text_output": "Done"}, {"text_output": ".<|eot"}, {"text_output": "_id|>"})
    objects = validate_stream(st, run(st, body).body)
    assert content_of(objects) == "Done."
    assert finish_of(objects) == ["stop"]
    assert not any(c["delta"].get("content") == "" for o in objects[1:] for c in o["choices"])


def test_stream_error_in_the_middle(caplog: pytest.LogCaptureFixture) -> None:
    st = state(stream=True, include_usage=True)
    body = sse({"text_output": "one ", "num_output_tokens": 1}, {"text_output": "two", "num_output_tokens": 1},
               {"error": "Error generating stream: out of memory"}, {"text_output": "never"})
    with caplog.at_level(logging.WARNING):
        out = run(st, body)
    assert out.status == 200 and out.stream and out.usage is None
    objects = validate_stream(st, out.body)
    assert content_of(objects) == "one two"
    assert "error" in objects[-1] and objects[-1]["error"]["type"] == "server_error"
    assert finish_of(objects) == []
    assert "out of memory" in caplog.text


def test_stream_cut_mid_event_ends_with_error_and_done() -> None:
    st = state(stream=True)
    full = sse({"text_output": "alpha "}, {"text_output": "beta " + "€"}, {"text_output": "gamma"})
    for cut in range(1, 30):
        out = run(st, full[:-cut])
        objects = validate_stream(st, out.body)
        assert "error" in objects[-1]
        assert content_of(objects) in ("alpha ", "alpha beta €")


def test_stream_cut_inside_a_split_character_drops_the_fragment() -> None:
    st = state(stream=True)
    body = b'data: {"text_output":"ok \xe2\x82"}\n\ndata: {"text_out'
    objects = validate_stream(st, run(st, body).body)
    assert content_of(objects) == "ok " and "error" in objects[-1]


def test_stream_vllm_abort_mid_stream() -> None:
    st = state(stream=True)
    body = sse({"text_output": "part", "finish_reason": "None"}, {"text_output": "", "finish_reason": "abort"})
    objects = validate_stream(st, run(st, body).body)
    assert content_of(objects) == "part" and "error" in objects[-1]


@pytest.mark.parametrize("body", [
    b"", b"\n\n", b"<html><body>504 Gateway Time-out</body></html>", b'{"error":"x"}',
    b'data: {"error":"Error generating stream: failed"}\n\n', b'data: {"text_outp',
])
def test_stream_with_nothing_usable_is_a_502_json_error(body: bytes) -> None:
    out = run(state(stream=True), body)
    assert out.status == 502 and not out.stream
    assert error_of(out)["type"] == "server_error"


def test_stream_n_choices() -> None:
    st = state(stream=True, include_usage=True, n=2)
    body = sse(
        {"text_output": ["A", "X"], "finish_reason": ["None", "None"], "num_input_tokens": 2, "num_output_tokens": [1, 1]},
        {"text_output": ["B", ""], "finish_reason": ["stop", "None"], "num_input_tokens": 2, "num_output_tokens": [1, 0]},
        {"text_output": ["", "Y"], "finish_reason": ["None", "length"], "num_input_tokens": 2, "num_output_tokens": [0, 1]},
    )
    objects = validate_stream(st, run(st, body).body)
    assert all(len(o["choices"]) <= 1 for o in objects)
    assert [o["choices"][0]["delta"] for o in objects[:2]] == [{"role": "assistant", "content": ""}] * 2
    assert (content_of(objects, 0), content_of(objects, 1)) == ("AB", "XY")
    assert (finish_of(objects, 0), finish_of(objects, 1)) == (["stop"], ["length"])
    assert objects[-1]["usage"]["completion_tokens"] == 4


def test_stream_of_500_events() -> None:
    st = state(stream=True, include_usage=True, max_tokens=500)
    body = sse(*({"text_output": f"w{i} ", "num_input_tokens": 10, "num_output_tokens": 1} for i in range(500)))
    objects = validate_stream(st, run(st, body).body)
    assert len(objects) == 1 + 500 + 1 + 1
    assert content_of(objects) == "".join(f"w{i} " for i in range(500))
    assert finish_of(objects) == ["length"]


def test_stream_completions_endpoint() -> None:
    st = state(endpoint="completions", stream=True, include_usage=True)
    body = sse({"text_output": "foo", "num_input_tokens": 1, "num_output_tokens": 1},
               {"text_output": "bar", "num_input_tokens": 1, "num_output_tokens": 1})
    objects = validate_stream(st, run(st, body).body)
    assert [o["choices"][0]["text"] for o in objects[:2]] == ["foo", "bar"]
    assert objects[2]["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
    assert objects[3]["choices"] == [] and objects[3]["usage"]["total_tokens"] == 3


def test_stream_from_a_generate_answer_and_generate_from_a_stream() -> None:
    # The request plugin decides the API; the output form follows the client's `stream` flag.
    st = state(stream=True, api="generate")
    objects = validate_stream(st, run(st, b'{"text_output":"whole"}').body)
    assert content_of(objects) == "whole"
    st = state(stream=False, api="generate_stream")
    out = run(st, sse({"text_output": "a"}, {"text_output": "b"}))
    assert ChatCompletion.model_validate_json(out.body).choices[0].message.content == "ab"
    out = run(st, sse({"text_output": "a"}, {"error": "boom"}))
    assert out.status == 502


def test_stream_empty_generation_is_a_valid_stream() -> None:
    st = state(stream=True)
    objects = validate_stream(st, run(st, sse({"text_output": "", "finish_reason": "stop"})).body)
    assert content_of(objects) == "" and finish_of(objects) == ["stop"]
    assert len(objects) == 2


def test_stream_error_with_error_status_keeps_triton_message() -> None:
    """Triton answers a failure of the first stream response with its status and one event."""
    from apisix_openai_triton.plugins.triton_response import error_message

    body = b'data: {"error":"Streaming is only supported in decoupled mode."}\n\n'
    assert error_message(body) == "Streaming is only supported in decoupled mode."
    assert error_message(b"data: not json\n\n") is None
