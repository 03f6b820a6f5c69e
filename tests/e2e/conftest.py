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

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from e2e_stack import MODEL, ROUTES, Stack, serve_stack  # noqa: E402


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
    async with serve_stack(ROUTES, f"{MODEL}:vllm", runner_socket) as running:
        yield running
