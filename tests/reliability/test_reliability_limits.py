"""Input limits through the socket: each refusal is a clean 4xx OpenAI envelope in a Stop, a body
near the 16 MiB frame limit included, and an answer too large for a frame is an error frame."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai_shapes import check_error_envelope
from reliability_kit import Big

from apisix_openai_triton.plugins.openai_to_triton import OpenAIToTriton
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.framing import MAX_PAYLOAD
from apisix_openai_triton.runner.testkit import GatewayClient, raw_connection, run_runner

LIMITS = {"model": "m", "template": "chatml", "max_body_bytes": 64 * 1024, "max_messages": 8,
          "max_prompt_chars": 2000, "max_tokens_cap": 100, "max_tokens_default": 50}


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayClient]:
    async with run_runner(plugins=[OpenAIToTriton, Big]) as runner, runner.client() as client:
        yield client


async def chat(gateway: GatewayClient, doc: Any, conf: Any = None, raw: bytes = b"") -> Any:
    body = raw or json.dumps(doc).encode()
    return await gateway.request([("openai-to-triton", conf or LIMITS)], method="POST",
                                 path="/v1/chat/completions", body=body)


def refused(outcome: Any, status: int, code: str) -> None:
    assert outcome.action == "stop", (outcome.action, outcome.error)
    assert outcome.response.status == status
    error = check_error_envelope(outcome.response.body)
    assert error.code == code, error


def user(text: str, n: int = 1) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}] * n}


async def test_body_over_the_route_limit_is_413(gateway: GatewayClient) -> None:
    refused(await chat(gateway, user("a" * 70_000)), 413, "content_too_large")


async def test_too_many_messages(gateway: GatewayClient) -> None:
    refused(await chat(gateway, user("hi", 9)), 400, "array_above_max_length")
    assert (await chat(gateway, user("hi", 8))).action == "rewrite"


async def test_total_prompt_characters(gateway: GatewayClient) -> None:
    refused(await chat(gateway, user("a" * 400, 5)), 400, "context_length_exceeded")


async def test_max_tokens_is_capped(gateway: GatewayClient) -> None:
    outcome = await chat(gateway, dict(user("hi"), max_tokens=100_000))
    assert outcome.action == "rewrite"
    body = outcome.upstream.json()
    assert 100 in body.values() or 100 in body.get("parameters", {}).values(), body


@pytest.mark.parametrize("size", [16 * 1024 * 1024 - 100, 15 * 1024 * 1024 + 1])
async def test_body_near_the_frame_limit_is_refused_cleanly(gateway: GatewayClient, size: int) -> None:
    """The largest body the gateway can hand over (16 MiB - 100 bytes of JSON), on a route at the
    highest body limit the conf allows: a 413 envelope in a well-formed Stop frame."""
    conf = dict(LIMITS, max_body_bytes=15 * 1024 * 1024, max_prompt_chars=15 * 1024 * 1024)
    prefix = b'{"model": "m", "messages": [{"role": "user", "content": "'
    suffix = b'"}]}'
    raw = prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix
    assert len(raw) == size
    outcome = await chat(gateway, None, conf, raw)
    refused(outcome, 413, "content_too_large")
    assert outcome.extra_info_round_trips == 1


async def test_an_answer_over_the_frame_limit_becomes_an_error_frame(gateway: GatewayClient) -> None:
    token = await gateway.prepare([("big", {"size": MAX_PAYLOAD + 1})])
    async with raw_connection(gateway.socket_path) as raw:
        await raw.send(m.HTTPReqCallRequest(1, token))
        assert await raw.read() == m.ErrorResponse(m.ErrorCode.SERVICE_UNAVAILABLE)
    outcome = await gateway.request([("big", {"size": MAX_PAYLOAD + 1})])
    assert outcome.action == "error" and "SERVICE_UNAVAILABLE" in (outcome.error or "")
    # the connection and the runner are fine afterwards: an answer just under the limit goes out
    outcome = await gateway.request([("big", {"size": MAX_PAYLOAD - 1024})])
    assert outcome.response is not None and outcome.action == "stop"
    assert len(outcome.response.body) == MAX_PAYLOAD - 1024
