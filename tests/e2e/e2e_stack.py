"""What the end-to-end tests share: the model, the route file, and the running stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import openai

from apisix_openai_triton.tools.dev_gateway import UpstreamCall, serve_dev_gateway
from apisix_openai_triton.tools.dev_routes import compile_routes
from apisix_openai_triton.tools.mock_triton import start_mock_triton
from apisix_openai_triton.tools.routes import parse_route_file, plugin_validators

MODEL = "llama-3.1-8b-instruct"

# A model map (not `model`): only a route that serves a map answers 404 for another name.
ROUTES = f"""\
version: 1
defaults:
  upstream:
    nodes: [triton:8000]
  openai-to-triton:
    models:
      {MODEL}: {MODEL}
    backend: vllm
    template: llama3
  triton-to-openai: {{}}
routes:
  - id: chat
    uri: /v1/chat/completions
  - id: completions
    uri: /v1/completions
  - id: models
    uri: /v1/models
"""


@dataclass
class Stack:
    url: str
    upstream_calls: list[UpstreamCall] = field(default_factory=list)

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0,
                                  timeout=20)


@asynccontextmanager
async def serve_stack(routes_text: str, model_spec: str, runner_socket: str) -> AsyncIterator[Stack]:
    """mock-triton serving ``model_spec`` and the dev gateway with ``routes_text`` pointed at it,
    recording every upstream request."""
    mock, port = await start_mock_triton(models=(model_spec,))
    try:
        routes = parse_route_file(routes_text, "e2e routes", validators=plugin_validators(),
                                  upstream={"nodes": [f"127.0.0.1:{port}"]})
        calls: list[UpstreamCall] = []
        async with serve_dev_gateway(compile_routes(routes), runner_socket,
                                     observe_upstream=calls.append) as gateway:
            yield Stack(gateway.url, calls)
    finally:
        await mock.cleanup()
