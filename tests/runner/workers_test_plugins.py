"""Plugins for the worker and metrics tests (loaded by name through ``PYTHONPATH``)."""

from __future__ import annotations

import os
from typing import Any, Optional

from apisix_openai_triton.runner import Plugin, Request, Stop
from apisix_openai_triton.runner import metrics


class WhichWorker(Plugin[Any]):
    """Answers every request with the pid of the process that served it."""

    name = "which-worker"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return Stop(200, {"x-worker-pid": str(os.getpid())}, b"ok")


class CountsTokens(Plugin[Any]):
    """Reports token usage for the model named in its conf, like the OpenAI plugins should."""

    name = "counts-tokens"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        metrics.count_tokens(conf["model"], 7, 3)
        return None
