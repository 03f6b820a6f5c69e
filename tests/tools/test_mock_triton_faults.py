"""mock-triton's test-only fault injection: the ways a real deployment fails, on demand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from apisix_openai_triton.tools.mock_triton import (
    DELAY_HEADER,
    FAIL_AFTER_HEADER,
    FAULT_HEADER,
    start_mock_triton,
)
from apisix_openai_triton.tools.mock_triton_text import complete

PROMPT = "Stream me something"
STREAM_BODY = {"text_input": PROMPT, "stream": True, "exclude_input_in_output": True,
               "sampling_parameters": json.dumps({"max_tokens": 10})}
PLAIN_BODY = {**STREAM_BODY, "stream": False}


@pytest.fixture
async def base() -> AsyncIterator[str]:
    runner, port = await start_mock_triton(models=("vm:vllm",))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def call(base: str, api: str, body: dict[str, Any], fault: str | None = None,
               **headers: str) -> tuple[int, str, bytes]:
    if fault is not None:
        headers[FAULT_HEADER] = fault
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v2/models/vm/{api}", data=json.dumps(body),
                             headers=headers) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.read()


def blocks(raw: bytes) -> list[bytes]:
    return raw.split(b"\n\n")


@pytest.mark.parametrize(("fault", "status"), [("http-500", 500), ("http-503", 503),
                                                ("http-429", 429)])
async def test_status_faults_answer_triton_error_json(base: str, fault: str, status: int) -> None:
    for api in ("generate", "generate_stream"):
        got, ctype, raw = await call(base, api, PLAIN_BODY, fault)
        assert (got, ctype) == (status, "application/json")
        assert set(json.loads(raw)) == {"error"}


async def test_html_from_a_proxy(base: str) -> None:
    status, ctype, raw = await call(base, "generate", PLAIN_BODY, "html")
    assert status == 502 and ctype.startswith("text/html")
    assert raw.startswith(b"<html>") and b"502 Bad Gateway" in raw


async def test_truncated_json_and_truncated_last_event(base: str) -> None:
    status, ctype, raw = await call(base, "generate", PLAIN_BODY, "truncated")
    assert status == 200 and ctype == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    status, _, raw = await call(base, "generate_stream", STREAM_BODY, "truncated")
    assert status == 200 and not raw.endswith(b"\n\n")
    *complete_events, last = blocks(raw)
    assert len(complete_events) == 9 and all(json.loads(e[6:]) for e in complete_events)
    with pytest.raises(json.JSONDecodeError):
        json.loads(last[6:])


async def test_error_mid_stream_keeps_status_200(base: str) -> None:
    status, ctype, raw = await call(base, "generate_stream", STREAM_BODY, "error-mid-stream",
                                    **{FAIL_AFTER_HEADER: "3"})
    assert status == 200 and ctype == "text/event-stream; charset=utf-8"
    events = [json.loads(b[6:]) for b in blocks(raw)[:-1]]
    assert len(events) == 4
    assert [e["text_output"] for e in events[:3]] == list(
        complete(PROMPT, max_tokens=10).pieces[:3])
    assert set(events[3]) == {"error"}


async def test_error_as_the_first_response_sets_the_status(base: str) -> None:
    status, ctype, raw = await call(base, "generate_stream", STREAM_BODY, "error-mid-stream",
                                    **{FAIL_AFTER_HEADER: "0"})
    assert status == 500 and ctype.startswith("text/event-stream")
    assert raw.startswith(b'data: {"error":') and raw.count(b"data: ") == 1


async def test_fail_after_option_applies_to_every_stream() -> None:
    runner, port = await start_mock_triton(models=("vm:vllm",), fail_after=2)
    try:
        base = f"http://127.0.0.1:{port}"
        status, _, raw = await call(base, "generate_stream", STREAM_BODY)
        events = [json.loads(b[6:]) for b in blocks(raw)[:-1]]
        assert status == 200 and len(events) == 3 and "error" in events[2]
        status, _, raw = await call(base, "generate", PLAIN_BODY)  # only streams fail
        assert status == 200 and "text_output" in json.loads(raw)
    finally:
        await runner.cleanup()


async def test_fault_option_spares_health_checks() -> None:
    runner, port = await start_mock_triton(models=("vm:vllm",), fault="http-503")
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v2/health/ready") as r:
                assert r.status == 200
        assert (await call(base, "generate", PLAIN_BODY))[0] == 503
        # The header wins over the option: an explicit empty fault list means none.
        assert (await call(base, "generate", PLAIN_BODY, ""))[0] == 200
    finally:
        await runner.cleanup()


async def test_slow_answers_late(base: str) -> None:
    timeout = aiohttp.ClientTimeout(total=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(f"{base}/v2/models/vm/generate", data=json.dumps(PLAIN_BODY),
                                 headers={FAULT_HEADER: "slow", DELAY_HEADER: "10000"}) as r:
                await r.read()
        # A short delay still answers normally.
        async with http.post(f"{base}/v2/models/vm/generate", data=json.dumps(PLAIN_BODY),
                             headers={FAULT_HEADER: "slow", DELAY_HEADER: "1"}) as r:
            assert r.status == 200


async def test_unknown_fault_names_are_refused(base: str) -> None:
    status, _, raw = await call(base, "generate", PLAIN_BODY, "http-500,explode")
    assert status == 400 and "explode" in json.loads(raw)["error"]
    with pytest.raises(ValueError):
        await start_mock_triton(fault="explode")
    with pytest.raises(ValueError):
        await start_mock_triton(fail_after=-1)


async def test_token_delay_still_streams_every_event() -> None:
    runner, port = await start_mock_triton(models=("vm:vllm",), token_delay=0.001)
    try:
        _, _, raw = await call(f"http://127.0.0.1:{port}", "generate_stream", STREAM_BODY)
        assert raw.count(b"data: ") == complete(PROMPT, max_tokens=10).tokens
    finally:
        await runner.cleanup()


async def test_body_size_limit() -> None:
    runner, port = await start_mock_triton(models=("vm:vllm",), max_input_size=1024)
    try:
        body = {**PLAIN_BODY, "text_input": "x " * 1000}
        status, _, raw = await call(f"http://127.0.0.1:{port}", "generate", body)
        assert status == 400 and "exceeds the maximum allowed input size" in json.loads(
            raw)["error"]
    finally:
        await runner.cleanup()
