"""Plugins that exist only to be measured by ``apisix-openai-triton bench``.

``bench-noop`` does nothing, so a call through it costs exactly what the runner itself costs
(framing, codec, conf lookup, dispatch): the protocol floor the ``noop`` workload reports.
Load it with ``--plugin apisix_openai_triton.tools.bench_plugins:NoopPlugin``.
"""

from __future__ import annotations

from typing import Any, Optional

from apisix_openai_triton.runner import Plugin, Request, Stop


class NoopPlugin(Plugin[Any]):
    """Answers every request with "no action"."""

    name = "bench-noop"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return None
