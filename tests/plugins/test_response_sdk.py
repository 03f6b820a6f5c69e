"""The converted answers through the real OpenAI client, over real HTTP on 127.0.0.1.

A local aiohttp server plays the gateway: for each client request it runs the triton-to-openai
plugin on a prepared Triton answer with a real runner Response, and serves exactly the status,
headers and body of ``Response.to_message()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from apisix_openai_triton.plugins.state import STATE_VAR, CallState, Endpoint, encode_state
from apisix_openai_triton.plugins.triton_to_openai import TritonToOpenAI
from apisix_openai_triton.runner import Response
from apisix_openai_triton.runner.protocol import messages as m


@dataclass
class Upstream:
    """What Triton answers to the next request."""

    status: int
    body: bytes
    content_type: str = "application/json"
    api: str = "generate"
    max_tokens: int = 64
    stop: tuple[str, ...] = ()


class FakeGateway:
    def __init__(self) -> None:
        self.plugin = TritonToOpenAI()
        self.conf = self.plugin.parse_conf('{"usage_headers": true}')
        self.upstream = Upstream(200, b"")
        self.served: list[m.HTTPRespCallResponse] = []

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        endpoint: Endpoint = "chat" if request.path.endswith("/chat/completions") else "completions"
        up = self.upstream
        stream = bool(payload.get("stream"))
        state = CallState(
            payload["model"], endpoint, ("chatcmpl-" if endpoint == "chat" else "cmpl-") + "sdk1",
            1_700_000_002, stream, bool((payload.get("stream_options") or {}).get("include_usage")),
            int(payload.get("n") or 1), up.max_tokens, "vllm", up.api, up.stop)  # type: ignore[arg-type]
        state_value = encode_state(state)

        async def ask(info: m.Info) -> bytes | None:
            if isinstance(info, m.RespBody):
                return up.body or None
            if isinstance(info, m.Var) and info.name == STATE_VAR:
                return state_value.encode()
            return None

        response = Response(m.HTTPRespCallRequest(
            id=1, conf_token=1, status=up.status,
            headers=[("content-type", up.content_type), ("content-length", str(len(up.body)))]), ask)
        await self.plugin.response_filter(self.conf, response)
        msg = response.to_message()
        self.served.append(msg)
        assert all(k != "content-length" for k, _ in msg.headers)
        return web.Response(status=msg.status or up.status,
                            headers=[(k, v or "") for k, v in msg.headers], body=msg.body)


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[FakeGateway, openai.AsyncOpenAI]]:
    fake = FakeGateway()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    app.router.add_post("/v1/completions", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                                timeout=10)
    try:
        yield fake, client
    finally:
        await client.close()
        await runner.cleanup()


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


MESSAGES: Any = [{"role": "user", "content": "hi"}]


async def test_chat_completion(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, orjson.dumps({"model_name": "llama", "text_output": "Grüß dich 😀",
                                                "num_input_tokens": 7, "num_output_tokens": 64}))
    raw = await client.chat.completions.with_raw_response.create(model="my-model", messages=MESSAGES)
    assert raw.headers["x-openai-triton-total-tokens"] == "71"
    completion = raw.parse()
    assert completion.id == "chatcmpl-sdk1" and completion.model == "my-model"
    assert completion.choices[0].message.content == "Grüß dich 😀"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.prompt_tokens == 7


async def test_chat_completion_n(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, orjson.dumps({"text_output": ["a", "b"], "finish_reason": ["stop", "stop"]}))
    completion = await client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    assert [c.message.content for c in completion.choices] == ["a", "b"]
    assert completion.usage is None


async def test_chat_stream(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, sse(
        {"text_output": "Hel", "finish_reason": "None", "num_input_tokens": 5, "num_output_tokens": 1},
        {"text_output": "lo ☃", "finish_reason": "None", "num_input_tokens": 5, "num_output_tokens": 1},
        {"text_output": "</s>", "finish_reason": "stop", "num_input_tokens": 5, "num_output_tokens": 1},
    ), "text/event-stream; charset=utf-8", "generate_stream", stop=("</s>",))
    stream = await client.chat.completions.create(
        model="my-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert {c.id for c in chunks} == {"chatcmpl-sdk1"} and {c.created for c in chunks} == {1_700_000_002}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello ☃"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 8
    served = fake.served[-1]
    assert ("content-type", "text/event-stream") in served.headers
    assert ("cache-control", "no-cache") in served.headers


async def test_chat_stream_error_in_the_middle_raises(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, sse({"text_output": "partial "}, {"error": "Error generating stream: boom"}),
                             "text/event-stream", "generate_stream")
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="failed during generation"):
        async for chunk in stream:
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "partial "


async def test_chat_stream_cut_raises(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, sse({"text_output": "a"}, {"text_output": "b"})[:-5],
                             "text/event-stream", "generate_stream")
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="could not be read"):
        async for _ in stream:
            pass


async def test_completions(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, b'{"text_output":" world","num_input_tokens":1,"num_output_tokens":1}')
    completion = await client.completions.create(model="m", prompt="hello")
    assert completion.object == "text_completion" and completion.id == "cmpl-sdk1"
    assert completion.choices[0].text == " world" and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 2


async def test_completions_stream(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, sse({"text_output": "a"}, {"text_output": "b"}), "text/event-stream",
                             "generate_stream")
    stream = await client.completions.create(model="m", prompt="x", stream=True)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks) == "ab"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_infer_answer(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, orjson.dumps({"model_name": "ensemble", "outputs": [
        {"name": "text_output", "datatype": "BYTES", "shape": [1, 1], "data": ["inferred"]}]}), api="infer")
    completion = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "inferred"


@pytest.mark.parametrize("status, body, exc, fragment", [
    (400, b'{"error":"attempt to access JSON non-string as string"}', openai.BadRequestError, "non-string"),
    (404, b'{"error":"Request for unknown model"}', openai.NotFoundError, "does not exist"),
    (429, b'{"error":"busy"}', openai.RateLimitError, "rate limiting"),
    (500, b'{"error":"internal"}', openai.InternalServerError, "HTTP 500"),
    (503, b"<html><body>Service Unavailable</body></html>", openai.InternalServerError, "unreadable"),
    (200, b"<html><body>proxy login page</body></html>", openai.InternalServerError, "could not be read"),
    (200, b'{"text_output": "trunc', openai.InternalServerError, "could not be read"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_errors_raise_the_right_exception(
    gateway: tuple[FakeGateway, openai.AsyncOpenAI], status: int, body: bytes, exc: type[openai.APIStatusError],
    fragment: str, stream: bool,
) -> None:
    fake, client = gateway
    fake.upstream = Upstream(status, body, api="generate_stream" if stream else "generate")
    with pytest.raises(exc, match=fragment) as info:
        if stream:
            async for _ in await client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                pass
        else:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert isinstance(info.value.body, dict) and set(info.value.body) == {"message", "type", "param", "code"}


async def test_completions_error(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(404, b'{"error":"unknown model"}')
    with pytest.raises(openai.NotFoundError) as info:
        await client.completions.create(model="nope", prompt="x")
    assert info.value.code == "model_not_found" and "nope" in info.value.message


async def test_empty_stream_raises_server_error(gateway: tuple[FakeGateway, openai.AsyncOpenAI]) -> None:
    fake, client = gateway
    fake.upstream = Upstream(200, b"", "text/event-stream", "generate_stream")
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
