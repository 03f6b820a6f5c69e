"""Usage from the routes' tokenizers when the backend returns no counts, and the token metrics.

The whole path: the real ``openai`` SDK, the dev gateway, a runner process with
``--metrics-listen``, and mock-triton serving a generic-backend model (which returns
``text_output`` only). The prompt is counted by ``openai-to-triton`` (its conf's ``tokenizer``)
and carried to ``triton-to-openai`` in the signed state; the completion is counted there.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from apisix_openai_triton.runner.testkit import RunnerProcess
from apisix_openai_triton.tools.mock_triton_text import VOCABULARY

from e2e_stack import Stack, serve_stack

pytestmark = pytest.mark.timeout(60)

MODEL = "tiny-generic"
PREFIX = "apisix_openai_triton_runner_tokens_total"


def write_tokenizer(path: Path) -> Path:
    """A word-level tokenizer trained on the stand-in's words, adding a BOS token like Llama's."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = " ".join(VOCABULARY) + " say hello in three words please user assistant system"
    tokenizer.train_from_iterator([corpus], trainers.WordLevelTrainer(
        special_tokens=["[UNK]", "<bos>"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tokenizer.token_to_id("<bos>"))])
    tokenizer.save(str(path))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def tokenizer_path(tmp_path: Path) -> Path:
    return write_tokenizer(tmp_path / "tokenizer.json")


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def runner_socket(tmp_path: Path, metrics_port: int) -> Iterator[str]:
    with RunnerProcess(str(tmp_path / "runner.sock"), "--metrics-listen",
                       f"127.0.0.1:{metrics_port}") as runner:
        yield runner.socket_path


@pytest.fixture
async def stack(runner_socket: str, tokenizer_path: Path) -> AsyncIterator[Stack]:
    routes_text = f"""\
version: 1
defaults:
  upstream:
    nodes: [triton:8000]
  openai-to-triton:
    model: {MODEL}
    backend: generic
    template: chatml
    tokenizer: {tokenizer_path}
  triton-to-openai:
    tokenizer: {tokenizer_path}
    usage_headers: true
routes:
  - id: chat
    uri: /v1/chat/completions
"""
    async with serve_stack(routes_text, f"{MODEL}:generic", runner_socket) as running:
        yield running


def scrape_tokens(port: int) -> dict[str, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    found = re.findall(PREFIX + r'\{model="([^"]+)",kind="(\w+)"\} (\S+)', data.decode())
    return {f"{model}/{kind}": float(value) for model, kind, value in found}


async def test_prompt_and_completion_tokens_come_from_the_tokenizers(
    stack: Stack, tokenizer_path: Path, metrics_port: int
) -> None:
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    async with stack.client() as client:
        plain = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello in three words."}],
            max_tokens=12, seed=3)
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": "please"},
                                   {"role": "user", "content": "hello hello"}],
            max_tokens=5, seed=4, stream=True, stream_options={"include_usage": True})
        pieces, stream_usage = [], None
        async for chunk in stream:
            stream_usage = chunk.usage or stream_usage
            pieces.extend(c.delta.content or "" for c in chunk.choices)
    answer = plain.parse()
    prompts = [orjson.loads(call.body)["text_input"] for call in stack.upstream_calls]
    assert len(prompts) == 2 and prompts[0].startswith("<|im_start|>user\n")

    # The generic backend returned no counts: these are the tokenizers' numbers.
    usage = answer.usage
    assert usage is not None and stream_usage is not None
    text = answer.choices[0].message.content or ""
    assert usage.prompt_tokens == len(tokenizer.encode(prompts[0]).ids)
    assert tokenizer.encode(prompts[0]).tokens[0] == "<bos>"  # counted as the backend would
    assert usage.completion_tokens == len(tokenizer.encode(text, add_special_tokens=False).ids) > 0
    assert plain.headers["x-openai-triton-prompt-tokens"] == str(usage.prompt_tokens)
    assert stream_usage.prompt_tokens == len(tokenizer.encode(prompts[1]).ids)
    assert stream_usage.completion_tokens == len(
        tokenizer.encode("".join(pieces), add_special_tokens=False).ids) > 0

    # count_tokens: one call per response whose usage is known, labelled with the served model.
    counts = await asyncio.get_running_loop().run_in_executor(None, scrape_tokens, metrics_port)
    assert counts == {
        f"{MODEL}/prompt": usage.prompt_tokens + stream_usage.prompt_tokens,
        f"{MODEL}/completion": usage.completion_tokens + stream_usage.completion_tokens,
    }
