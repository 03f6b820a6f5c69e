"""What the end-to-end tests share: the model, the route file, and the running stack."""

from __future__ import annotations

from dataclasses import dataclass, field

import openai

from apisix_openai_triton.tools.dev_gateway import UpstreamCall

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
