"""Broken Triton answers through both plugins over the runner's socket: the client always gets
a whole, valid OpenAI answer or error (checked with the openai SDK's types), never a half body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai_shapes import check_client_answer, check_error_envelope

from apisix_openai_triton.plugins.openai_to_triton import OpenAIToTriton
from apisix_openai_triton.plugins.triton_to_openai import TritonToOpenAI
from apisix_openai_triton.runner.testkit import RunningRunner, run_runner

REQ_CONF = [("openai-to-triton", {"model": "m", "template": "chatml"})]
RESP_CONF: list[tuple[str, Any]] = [("triton-to-openai", {})]
MB = 1024 * 1024


def sse(*docs: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs)


def gen(text: str, **extra: Any) -> dict[str, Any]:
    return {"model_name": "m", "model_version": "1", "text_output": text, **extra}


GOOD_STREAM = sse(gen("Hel"), gen("lo, "), gen("world"), gen("!", finish_reason="stop"))
HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

CASES: list[tuple[str, bool, int, str, bytes]] = [
    # id, stream, Triton status, Triton content type, Triton body
    ("empty-200", False, 200, "application/json", b""),
    ("empty-500", False, 500, "application/json", b""),
    ("truncated-json", False, 200, "application/json", json.dumps(gen("abc"))[:-7].encode()),
    ("html-200", False, 200, "text/html", HTML),
    ("html-502", False, 502, "text/html", HTML),
    ("json-not-an-object", False, 200, "application/json", b"[1, 2, 3]"),
    ("no-text-output", False, 200, "application/json", b'{"model_name": "m"}'),
    ("triton-error-400", False, 400, "application/json", b'{"error": "unexpected input"}'),
    ("10mb-good", False, 200, "application/json", json.dumps(gen("a" * (10 * MB))).encode()),
    ("10mb-quotes", False, 200, "application/json", json.dumps(gen('"' * (10 * MB // 2))).encode()),
    ("10mb-garbage", False, 200, "application/json", b"\xff\xfe" * (5 * MB)),
    ("14mb-over-the-limit", False, 200, "application/json", json.dumps(gen("a" * (14 * MB))).encode()),
    ("stream-good", True, 200, "text/event-stream", GOOD_STREAM),
    ("stream-empty", True, 200, "text/event-stream", b""),
    ("stream-cut-mid-event", True, 200, "text/event-stream", GOOD_STREAM[:-20]),
    ("stream-cut-mid-json", True, 200, "text/event-stream", GOOD_STREAM[:len(GOOD_STREAM) // 2]),
    ("stream-cut-mid-utf8", True, 200, "text/event-stream",
     sse(gen("héllo")) + b'data: {"model_name": "m", "text_output": "\xc3'),
    ("stream-html", True, 200, "text/html", HTML),
    ("stream-error-event", True, 200, "text/event-stream",
     sse(gen("partial")) + sse({"error": "model crashed"})),
    ("stream-500", True, 500, "application/json", b'{"error": "boom"}'),
    ("stream-10mb", True, 200, "text/event-stream", sse(*(gen("x" * 4096) for _ in range(2500)))),
]


@pytest.fixture
async def runner() -> AsyncIterator[RunningRunner]:
    async with run_runner(plugins=[OpenAIToTriton, TritonToOpenAI]) as running:
        yield running


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_broken_triton_answers_become_valid_openai_answers(
    runner: RunningRunner, case: tuple[str, bool, int, str, bytes]
) -> None:
    name, stream, status, content_type, body = case
    async with runner.client() as gateway:
        request = await gateway.request(
            REQ_CONF, method="POST", path="/v1/chat/completions",
            body=json.dumps({"model": "m", "stream": stream,
                             "messages": [{"role": "user", "content": "hi"}]}).encode())
        assert request.action == "rewrite" and request.upstream is not None
        outcome = await gateway.response(
            RESP_CONF, status=status, body=body,
            headers={"content-type": content_type, "content-length": str(len(body))},
            request_headers=request.upstream.headers)
    assert outcome.action == "answered", outcome.error  # never a 503 from the runner
    text = check_client_answer(outcome.status, outcome.headers, outcome.body, stream)
    if name in ("10mb-good", "stream-good", "stream-10mb", "10mb-quotes"):
        expected = {"10mb-good": "a" * (10 * MB), "stream-good": "Hello, world!",
                    "stream-10mb": "x" * (4096 * 2500), "10mb-quotes": '"' * (10 * MB // 2)}[name]
        assert text == expected
    if name == "14mb-over-the-limit":
        assert outcome.status >= 500
    if name.startswith("stream-cut"):
        assert text is None  # an error event, then [DONE]: the client knows it was cut


async def test_a_forged_state_header_is_refused_by_the_response_plugin(runner: RunningRunner) -> None:
    async with runner.client() as gateway:
        request = await gateway.request(
            REQ_CONF, method="POST", path="/v1/chat/completions",
            body=b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
        assert request.upstream is not None
        genuine = request.upstream.header("x-openai-triton-state")
        assert genuine is not None
        payload, mac = genuine.split(".")
        forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
        for forged in (forged_payload + "." + mac, payload + ".AAAAAAAAAAAAAAAAAAAAAA==", "x.y", "garbage"):
            outcome = await gateway.response(
                RESP_CONF, status=200, headers={"content-type": "application/json"},
                body=json.dumps(gen("secret")).encode(),
                request_headers={"x-openai-triton-state": forged})
            assert outcome.action == "answered" and outcome.status == 500
            assert b"secret" not in outcome.body
            check_error_envelope(outcome.body)
