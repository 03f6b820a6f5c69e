"""The whole path on loopback: a real runner process, mock-triton and the dev gateway.

The runner is one process for the session (it is what a gateway talks to for hours); the Triton
stand-in and the dev gateway are started per test, with a hook that records every upstream
request so a test can check exactly what reached "Triton". ``e2e_stack`` (beside this file) is
importable by name from the tests.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from apisix_openai_triton.runner.testkit import RunnerProcess
from apisix_openai_triton.tools.dev_gateway import UpstreamCall, serve_dev_gateway
from apisix_openai_triton.tools.dev_routes import compile_routes
from apisix_openai_triton.tools.mock_triton import start_mock_triton
from apisix_openai_triton.tools.routes import parse_route_file, plugin_validators

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from e2e_stack import MODEL, ROUTES, Stack  # noqa: E402


@pytest.fixture(scope="session")
def runner_socket() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="a6-e2e-")
    try:
        with RunnerProcess(os.path.join(directory, "runner.sock")) as runner:
            yield runner.socket_path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def stack(runner_socket: str) -> AsyncIterator[Stack]:
    mock, port = await start_mock_triton(models=(f"{MODEL}:vllm",))
    try:
        routes = parse_route_file(ROUTES, "e2e routes", validators=plugin_validators(),
                                  upstream={"nodes": [f"127.0.0.1:{port}"]})
        calls: list[UpstreamCall] = []
        async with serve_dev_gateway(compile_routes(routes), runner_socket,
                                     observe_upstream=calls.append) as gateway:
            yield Stack(gateway.url, calls)
    finally:
        await mock.cleanup()
