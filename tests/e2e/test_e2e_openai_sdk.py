"""The real ``openai`` SDK against the dev gateway, the real runner and mock-triton."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from apisix_openai_triton.plugins.state import STATE_HEADER
from apisix_openai_triton.tools.mock_triton import FAULT_HEADER

from e2e_stack import MODEL, Stack

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


async def test_chat_plain_and_stream_agree(stack: Stack) -> None:
    async with stack.client() as client:
        plain = await client.chat.completions.create(model=MODEL, messages=HELLO, seed=7,
                                                     max_tokens=40)
        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, seed=7, max_tokens=40, stream=True,
            stream_options={"include_usage": True})
        pieces, finish, usage, ids = [], None, None, set()
        async for chunk in stream:
            ids.add(chunk.id)
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
    content = plain.choices[0].message.content
    assert content and "".join(pieces) == content
    assert plain.model == MODEL and plain.object == "chat.completion"
    assert plain.choices[0].finish_reason == finish and finish in ("stop", "length")
    assert plain.usage is not None and usage is not None
    assert usage.completion_tokens == plain.usage.completion_tokens > 0
    assert usage.prompt_tokens == plain.usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    # The upstream requests: Triton's generate, then generate_stream, with the state header.
    paths = [call.url.split("/", 3)[3] for call in stack.upstream_calls]
    assert paths == [f"v2/models/{MODEL}/generate", f"v2/models/{MODEL}/generate_stream"]
    assert all(dict(call.headers).get(STATE_HEADER) for call in stack.upstream_calls)


async def test_chat_max_tokens_is_honoured_with_finish_reason_length(stack: Stack) -> None:
    async with stack.client() as client:
        reply = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert len((reply.choices[0].message.content or "").split()) == 3


async def test_completions(stack: Stack) -> None:
    async with stack.client() as client:
        plain = await client.completions.create(model=MODEL, prompt="Once upon a time",
                                                max_tokens=5)
        stream = await client.completions.create(model=MODEL, prompt="Once upon a time",
                                                 max_tokens=5, stream=True)
        streamed = "".join([c.choices[0].text async for c in stream if c.choices])
    assert plain.object == "text_completion" and plain.id.startswith("cmpl-")
    assert plain.choices[0].text == streamed and len(streamed.split()) == 5
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None and plain.usage.completion_tokens == 5
    # The completions prompt goes to Triton as given: no chat template.
    assert json.loads(stack.upstream_calls[0].body)["text_input"] == "Once upon a time"


async def test_models_list(stack: Stack) -> None:
    async with stack.client() as client:
        models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].owned_by == "triton"
    assert stack.upstream_calls == []  # answered by the request plugin itself


async def test_unknown_model_is_not_found(stack: Stack) -> None:
    async with stack.client() as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert "gpt-4o" in caught.value.message
    assert stack.upstream_calls == []


async def test_bad_temperature_is_a_bad_request_naming_the_param(stack: Stack) -> None:
    async with stack.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO, temperature=9)
    assert caught.value.status_code == 400 and caught.value.param == "temperature"
    assert stack.upstream_calls == []


async def test_error_mid_stream_raises_api_error_after_the_first_tokens(stack: Stack) -> None:
    pieces: list[str] = []
    async with stack.client() as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, stream=True, max_tokens=30,
            extra_headers={FAULT_HEADER: "error-mid-stream", "x-mock-fail-after": "2"})
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert not isinstance(caught.value, openai.APIStatusError)  # the status was 200
    assert len("".join(pieces).split()) == 2  # the two tokens before the error arrived
    # The fault header went upstream untouched, next to the plugin's own headers.
    assert dict(stack.upstream_calls[0].headers)[FAULT_HEADER] == "error-mid-stream"


async def test_upstream_error_status_is_a_server_error(stack: Stack) -> None:
    async with stack.client() as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO,
                                                 extra_headers={FAULT_HEADER: "http-500"})
    assert caught.value.status_code >= 500


async def test_n_choices_with_the_vllm_backend(stack: Stack) -> None:
    async with stack.client() as client:
        reply = await client.chat.completions.create(model=MODEL, messages=HELLO, n=3,
                                                     max_tokens=6)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = [c.message.content for c in reply.choices]
    assert all(t and len(t.split()) == 6 for t in texts)
    assert len(set(texts)) > 1  # each choice is its own sample
    assert reply.usage is not None and reply.usage.completion_tokens == 18


async def test_multi_turn_conversation_reaches_triton_as_the_llama3_prompt(stack: Stack) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "And now?"},
    ]
    async with stack.client() as client:
        await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    (call,) = stack.upstream_calls
    assert call.method == "POST" and call.url.endswith(f"/v2/models/{MODEL}/generate")
    assert dict(call.headers)["content-type"] == "application/json"
    sent = json.loads(call.body)
    assert sent["text_input"] == (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello there<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd now?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


async def test_the_sync_client_works_too(stack: Stack) -> None:
    def call() -> tuple[str, str]:
        with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0,
                           timeout=20) as client:
            plain = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model=MODEL, messages=HELLO,
                                                        max_tokens=8, stream=True)
                if c.choices)
        return plain.choices[0].message.content or "", streamed

    plain, streamed = await asyncio.to_thread(call)
    assert plain and plain == streamed


async def test_concurrent_requests_each_get_their_own_answer(stack: Stack) -> None:
    prompts = [f"Question number {i}" for i in range(12)]
    async with stack.client() as client:
        replies = await asyncio.gather(*(
            client.completions.create(model=MODEL, prompt=p, max_tokens=4) for p in prompts))
        again = await asyncio.gather(*(
            client.completions.create(model=MODEL, prompt=p, max_tokens=4) for p in prompts))
    texts = [r.choices[0].text for r in replies]
    assert texts == [r.choices[0].text for r in again]  # deterministic per prompt
    assert len(set(texts)) > 1
