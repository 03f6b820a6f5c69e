"""Reading Triton's answers (generate, generate_stream, infer) and assembling choice text."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apisix_openai_triton.plugins.stream_text import TextStitcher, trailing_stop, trim_pieces
from apisix_openai_triton.plugins.triton_response import (
    error_message,
    parse_generate,
    parse_infer,
    parse_reply,
    parse_stream,
)


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


# --- generate ------------------------------------------------------------------------------------


def test_generate_trtllm_flat_object() -> None:
    body = orjson.dumps({
        "model_name": "ensemble", "model_version": "1", "sequence_end": False,
        "batch_index": 0, "context_logits": 0.0, "cum_log_probs": 0.0,
        "output_log_probs": [0.0, 0.0], "text_output": " a cat",
        "num_input_tokens": 7, "num_output_tokens": 2,
    })
    reply = parse_generate(body)
    assert reply.failure is None
    (event,) = reply.events
    assert event.texts == [" a cat"]
    assert event.input_tokens == 7 and event.output_tokens == [2]
    assert not event.finish and not event.dirty


def test_generate_vllm_n_choices() -> None:
    body = orjson.dumps({"text_output": ["one", "two", "three"], "finish_reason": ["stop", "length", "stop"],
                         "num_input_tokens": 4, "num_output_tokens": [1, 5, 1]})
    (event,) = parse_generate(body).events
    assert event.texts == ["one", "two", "three"]
    assert event.finish == ["stop", "length", "stop"]
    assert event.output_tokens == [1, 5, 1]


def test_generate_placeholder_counts_are_not_counts() -> None:
    # TRT-LLM returns every output tensor; unrequested ones come back as 0.0 placeholders.
    (event,) = parse_generate(b'{"text_output":"x","num_input_tokens":0,"num_output_tokens":0.0}').events
    assert event.input_tokens is None
    assert event.output_tokens is None


def test_generate_error_object() -> None:
    reply = parse_generate(b'{"error":"generate expects model to produce exactly 1 response"}')
    assert reply.events == [] and reply.upstream_error
    assert reply.failure == "generate expects model to produce exactly 1 response"


@pytest.mark.parametrize("body", [
    b"", b"{", b'{"text_output": "abc', b"<html><body>502 Bad Gateway</body></html>", b"[1,2]",
    b'{"model_name":"m"}', b'{"text_output": 5}', b'"just a string"', b"[" * 100_000,
])
def test_generate_unusable_bodies_fail_without_raising(body: bytes) -> None:
    reply = parse_generate(body)
    assert reply.events == [] and reply.failure and not reply.upstream_error


def test_generate_invalid_utf8_goes_through_the_lenient_decoder() -> None:
    reply = parse_generate(b'{"text_output":"caf\xc3\xa9 \xe2\x82"}')
    (event,) = reply.events
    assert event.dirty
    stitcher = TextStitcher()
    assert stitcher.feed(event.texts[0], event.dirty) + stitcher.flush() == "caf\u00e9 \ufffd"


# --- infer ---------------------------------------------------------------------------------------


def test_infer_outputs_by_name_with_nested_data() -> None:
    body = orjson.dumps({"model_name": "ensemble", "id": "1", "outputs": [
        {"name": "cum_log_probs", "datatype": "FP32", "shape": [1, 1], "data": [0.0]},
        {"name": "text_output", "datatype": "BYTES", "shape": [1, 1], "data": [["Paris."]]},
        {"name": "num_output_tokens", "datatype": "INT32", "shape": [1, 1], "data": [2]},
        {"name": "num_input_tokens", "datatype": "INT32", "shape": [1, 1], "data": [9]},
    ]})
    (event,) = parse_infer(body).events
    assert event.texts == ["Paris."]
    assert event.output_tokens == [2] and event.input_tokens == 9


@pytest.mark.parametrize("body, reason", [
    (b'{"outputs": [{"name": "text_output", "parameters": {"binary_data_size": 9}}]}', "binary"),
    (b'{"outputs": [{"name": "other", "data": [1]}]}', "text_output"),
    (b'{"outputs": {"text_output": "x"}}', "outputs list"),
    (b'{"outputs": [5]}', "named tensor"),
])
def test_infer_unusable(body: bytes, reason: str) -> None:
    reply = parse_infer(body)
    assert reply.events == [] and reply.failure is not None and reason in reply.failure


def test_parse_reply_dispatches_on_api() -> None:
    assert parse_reply("infer", b'{"outputs":[{"name":"text_output","data":["a"]}]}').events[0].texts == ["a"]
    assert parse_reply("generate", b'{"text_output":"b"}').events[0].texts == ["b"]
    assert parse_reply("generate_stream", sse({"text_output": "c"})).events[0].texts == ["c"]


# --- generate_stream -----------------------------------------------------------------------------


def test_stream_many_events() -> None:
    body = sse(*({"text_output": f"t{i}", "num_output_tokens": 1} for i in range(500)))
    reply = parse_stream(body)
    assert reply.failure is None
    assert [e.texts[0] for e in reply.events] == [f"t{i}" for i in range(500)]


def test_stream_error_event_in_the_middle() -> None:
    body = sse({"text_output": "a"}, {"error": "Error generating stream: CUDA OOM"}, {"text_output": "b"})
    reply = parse_stream(body)
    assert [e.texts for e in reply.events] == [["a"]]
    assert reply.upstream_error and reply.failure == "Error generating stream: CUDA OOM"


@pytest.mark.parametrize("cut", [3, 10, 30])
def test_stream_cut_in_the_middle(cut: int) -> None:
    body = sse({"text_output": "a"}, {"text_output": "bbbbbbbbbbbbbbbbbbbbbbbb"})
    reply = parse_stream(body[:-cut])
    assert [e.texts for e in reply.events] == [["a"]]
    assert reply.failure is not None and not reply.upstream_error


def test_stream_missing_final_blank_line_is_a_cut() -> None:
    reply = parse_stream(b'data: {"text_output":"a"}\n\ndata: {"text_output":"b"}')
    assert len(reply.events) == 1 and reply.failure is not None


def test_stream_crlf_comments_multiline_and_done() -> None:
    body = (b': keep-alive\r\n\r\nevent: message\r\ndata: {"text_output":\r\ndata: "x"}\r\n\r\n'
            b'data:{"text_output":"y"}\r\n\r\ndata: [DONE]\r\n\r\n')
    reply = parse_stream(body)
    assert reply.failure is None
    assert [e.texts for e in reply.events] == [["x"], ["y"]]


def test_stream_empty_and_blank() -> None:
    assert parse_stream(b"").events == [] and parse_stream(b"").failure is None
    assert parse_stream(b"\n\n\n").failure is None


def test_stream_vllm_none_finish_reason_is_ignored() -> None:
    body = sse({"text_output": "a", "finish_reason": "None"}, {"text_output": "", "finish_reason": "length"})
    events = parse_stream(body).events
    assert list(events[0].finish) == [None] and list(events[1].finish) == ["length"]


def test_stream_html_body_fails() -> None:
    reply = parse_stream(b"<html>\n<head><title>504 Gateway Time-out</title></head>\n</html>\n")
    assert reply.events == [] and reply.failure is not None


def test_error_message() -> None:
    assert error_message(b'{"error":"Request for unknown model"}') == "Request for unknown model"
    assert error_message(b'{"error":{"message":"nested"}}') == "nested"
    assert error_message(b"<html>") is None
    assert error_message(b'{"detail":"x"}') is None


# --- stitching and stop trimming -----------------------------------------------------------------


def feed_all(pieces: list[tuple[str, bool]]) -> list[str]:
    stitcher = TextStitcher()
    out = [stitcher.feed(text, dirty) for text, dirty in pieces]
    out.append(stitcher.flush())
    return out


def test_clean_text_passes_through_unchanged() -> None:
    assert feed_all([("héllo ", False), ("wörld 😀", False)]) == ["héllo ", "wörld 😀", ""]


def test_raw_utf8_split_across_events_is_rebuilt() -> None:
    euro = "€".encode()  # 3 bytes
    emoji = "😀".encode()  # 4 bytes
    body = (b'data: {"text_output":"price ' + euro[:2] + b'"}\n\n'
            b'data: {"text_output":"' + euro[2:] + b" " + emoji[:1] + b'"}\n\n'
            b'data: {"text_output":"' + emoji[1:] + b'!"}\n\n')
    events = parse_stream(body).events
    assert all(e.dirty for e in events)
    out = feed_all([(e.texts[0], e.dirty) for e in events])
    assert out == ["price ", "€ ", "😀!", ""]


def test_escaped_surrogate_halves_split_across_events() -> None:
    events = parse_stream(sse_raw(['"a\\ud83d"', '"\\ude00b"'])).events
    assert "".join(feed_all([(e.texts[0], e.dirty) for e in events])) == "a😀b"


def sse_raw(texts: list[str]) -> bytes:
    return b"".join(b'data: {"text_output":' + t.encode() + b"}\n\n" for t in texts)


def test_unfinished_character_at_the_end_becomes_replacement() -> None:
    events = parse_stream(b'data: {"text_output":"ok \xf0\x9f"}\n\n').events
    assert "".join(feed_all([(e.texts[0], e.dirty) for e in events])) == "ok \ufffd"
    events = parse_stream(sse_raw(['"x\\ud83d"'])).events
    assert "".join(feed_all([(e.texts[0], e.dirty) for e in events])) == "x\ufffd"


def test_clean_event_after_unfinished_character_flushes_it() -> None:
    out = feed_all([("a\udce2\udc82", True), ("b", False)])
    assert out == ["a", "\ufffdb", ""]


@given(st.text(min_size=1, max_size=40), st.lists(st.integers(0, 200), max_size=6))
def test_raw_bytes_split_anywhere_rejoin(text: str, cuts: list[int]) -> None:
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    pieces = [data[a:b].decode("utf-8", "surrogateescape") for a, b in zip(points, points[1:])]
    assert "".join(feed_all([(p, True) for p in pieces])) == text


def test_trailing_stop_picks_the_longest() -> None:
    assert trailing_stop("hello<|eot_id|>", ("</s>", "<|eot_id|>", "|>")) == len("<|eot_id|>")
    assert trailing_stop("hello", ("</s>",)) == 0
    assert trailing_stop("hello", ("",)) == 0
    assert trailing_stop("", ("</s>",)) == 0


def test_trim_pieces_across_events() -> None:
    pieces = ["Hello", " wor", "ld<", "|eot", "_id|>", ""]
    trim_pieces(pieces, len("<|eot_id|>"))
    assert pieces == ["Hello", " wor", "ld", "", "", ""]
    pieces = ["</s>"]
    trim_pieces(pieces, 4)
    assert pieces == [""]
