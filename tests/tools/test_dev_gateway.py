"""The dev gateway against a real runner process and mock-triton, over real HTTP on loopback.

Each path APISIX takes has a test: Stop answered by the request plugin, Rewrite applied and sent
upstream, the response plugin's answer sent chunked, the upstream streamed through when a route
has no response plugin, and the gateway's own answers (404, 413, 502, 503, degradation).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from apisix_openai_triton.plugins.state import STATE_HEADER
from apisix_openai_triton.runner.testkit import RunnerProcess
from apisix_openai_triton.tools.dev_gateway import (
    RunningDevGateway,
    UpstreamCall,
    serve_dev_gateway,
)
from apisix_openai_triton.tools.dev_routes import RouteTable, compile_routes
from apisix_openai_triton.tools.mock_triton import start_mock_triton
from apisix_openai_triton.tools.routes import parse_route_file, plugin_validators

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def route_file(triton: int, down: int) -> str:
    return f"""\
version: 1
defaults:
  upstream:
    nodes: [127.0.0.1:{triton}]
  openai-to-triton:
    model: m
    backend: vllm
    template: llama3
routes:
  - id: chat
    uri: /v1/chat/completions
  - id: models
    uri: /v1/models
  - id: raw
    uri: /raw/*
    methods: [POST]
    triton-to-openai: false
  - id: down
    uri: /down/v1/chat/completions
    upstream:
      nodes: [127.0.0.1:{down}]
  - id: degrade
    uri: /degrade/v1/chat/completions
    allow_degradation: true
"""


def table_for(triton: int, down: int) -> RouteTable:
    return compile_routes(parse_route_file(route_file(triton, down), "dev test routes",
                                           validators=plugin_validators()))


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    directory = tempfile.mkdtemp(prefix="a6-devgw-")
    try:
        with RunnerProcess(os.path.join(directory, "runner.sock")) as process:
            yield process
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Setup:
    gateway: RunningDevGateway
    http: aiohttp.ClientSession
    calls: list[UpstreamCall]
    triton_port: int

    def url(self, path: str) -> str:
        return self.gateway.url + path


@asynccontextmanager
async def start(socket_path: str, *, max_body_bytes: int = 1 << 20) -> AsyncIterator[Setup]:
    mock, port = await start_mock_triton(models=("m:vllm",))
    calls: list[UpstreamCall] = []
    try:
        async with serve_dev_gateway(table_for(port, closed_port()), socket_path,
                                     observe_upstream=calls.append,
                                     max_body_bytes=max_body_bytes) as gateway, \
                aiohttp.ClientSession() as http:
            yield Setup(gateway, http, calls, port)
    finally:
        await mock.cleanup()


@pytest.fixture
async def setup(runner: RunnerProcess) -> AsyncIterator[Setup]:
    async with start(runner.socket_path) as value:
        yield value


# --- Stop -----------------------------------------------------------------------------------------


async def test_stop_path_models_answered_by_the_plugin(setup: Setup) -> None:
    async with setup.http.get(setup.url("/v1/models")) as r:
        assert r.status == 200 and r.content_type == "application/json"
        assert [m["id"] for m in (await r.json())["data"]] == ["m"]
    assert setup.calls == []


async def test_stop_path_invalid_body_is_an_openai_400(setup: Setup) -> None:
    async with setup.http.post(setup.url("/v1/chat/completions"), data=b"{not json") as r:
        assert r.status == 400 and r.content_type == "application/json"
        error = (await r.json())["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert setup.calls == []


# --- Rewrite and the upstream request -------------------------------------------------------------


async def test_rewrite_path_is_what_reaches_the_upstream(setup: Setup) -> None:
    async with setup.http.post(setup.url("/v1/chat/completions?trace=1&flag"), json=CHAT,
                               headers={"x-forwarded-for": "10.0.0.9",
                                        STATE_HEADER: "forged"}) as r:
        assert r.status == 200
    (call,) = setup.calls
    assert call.route_id == "chat" and call.method == "POST"
    assert call.url == f"http://127.0.0.1:{setup.triton_port}/v2/models/m/generate?trace=1&flag"
    headers = dict(call.headers)
    assert headers["content-type"] == "application/json"
    assert headers[STATE_HEADER] not in ("", "forged")
    assert [k for k, _ in call.headers].count(STATE_HEADER) == 1
    # The gateway's proxy headers: the client's Host passed on, X-Forwarded-For extended.
    assert headers["host"] == f"127.0.0.1:{setup.gateway.port}"
    assert headers["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert "content-length" not in headers  # recomputed for the rewritten body
    sent = orjson.loads(call.body)
    assert sent["text_input"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert orjson.loads(sent["sampling_parameters"])["max_tokens"] == 4


# --- the response phase ---------------------------------------------------------------------------


async def test_post_resp_answer_is_chunked_with_the_plugins_headers(setup: Setup) -> None:
    async with setup.http.post(setup.url("/v1/chat/completions"), json=CHAT) as r:
        assert r.status == 200
        assert r.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in r.headers
        assert r.headers["Content-Type"] == "application/json"
        reply = await r.json()
    assert reply["object"] == "chat.completion" and reply["model"] == "m"
    assert len(reply["choices"][0]["message"]["content"].split()) == 4
    assert reply["usage"]["completion_tokens"] == 4


async def test_post_resp_stream_is_sse(setup: Setup) -> None:
    async with setup.http.post(setup.url("/v1/chat/completions"),
                               json={**CHAT, "stream": True}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        text = (await r.read()).decode()
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert orjson.loads(events[0])["object"] == "chat.completion.chunk"


async def test_without_response_plugin_the_upstream_answer_streams_through(setup: Setup) -> None:
    body = {"model": "m", "prompt": "a b c", "max_tokens": 3}
    async with setup.http.post(setup.url("/raw/v1/completions"), json=body) as r:
        assert r.status == 200
        raw = await r.read()
        # Triton's own answer, untouched, with its own length.
        assert r.headers["Content-Length"] == str(len(raw))
        assert r.headers.get("Transfer-Encoding") is None
    triton = orjson.loads(raw)
    assert triton["model_name"] == "m" and len(triton["text_output"].split()) == 3
    assert setup.calls[0].route_id == "raw"
    assert setup.calls[0].url.endswith("/v2/models/m/generate")


async def test_upstream_error_status_reaches_the_response_plugin(setup: Setup) -> None:
    async with setup.http.post(setup.url("/v1/chat/completions"), json=CHAT,
                               headers={"x-mock-fault": "http-503"}) as r:
        assert r.content_type == "application/json"
        assert r.status >= 500 and (await r.json())["error"]["message"]


# --- the gateway's own answers --------------------------------------------------------------------


async def test_no_route_is_a_404_like_apisix(setup: Setup) -> None:
    async with setup.http.get(setup.url("/v1/embeddings")) as r:
        assert r.status == 404 and await r.json() == {"error_msg": "404 Route Not Found"}
    async with setup.http.get(setup.url("/raw/v1/completions")) as r:  # route is POST only
        assert r.status == 404


async def test_upstream_down_is_a_502(setup: Setup) -> None:
    async with setup.http.post(setup.url("/down/v1/chat/completions"), json=CHAT) as r:
        assert r.status == 502
    assert len(setup.calls) == 1  # the request phase ran; only the upstream failed


async def test_body_over_the_limit_is_a_413(runner: RunnerProcess) -> None:
    async with start(runner.socket_path, max_body_bytes=1024) as setup:
        async with setup.http.post(setup.url("/v1/chat/completions"),
                                   data=b"x" * 2048) as r:
            assert r.status == 413
        assert setup.calls == []


async def test_runner_down_is_a_503_and_degradation_passes_through() -> None:
    directory = tempfile.mkdtemp(prefix="a6-devgw-")
    try:
        process = RunnerProcess(os.path.join(directory, "runner.sock"))
        process.start()
        try:
            async with start(process.socket_path) as setup:
                async with setup.http.post(setup.url("/v1/chat/completions"), json=CHAT) as r:
                    assert r.status == 200
                process.stop()
                async with setup.http.post(setup.url("/v1/chat/completions"), json=CHAT) as r:
                    assert r.status == 503
                async with setup.http.get(setup.url("/v1/models")) as r:
                    assert r.status == 503
                assert len(setup.calls) == 1
                # allow_degradation: the request goes upstream as the client sent it.
                async with setup.http.post(setup.url("/degrade/v1/chat/completions"),
                                           json=CHAT) as r:
                    status = r.status
                last = setup.calls[-1]
                assert last.url.endswith("/degrade/v1/chat/completions")
                assert orjson.loads(last.body) == CHAT
                assert status == 404  # what mock-triton says to an OpenAI path
        finally:
            process.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- the command ----------------------------------------------------------------------------------


async def test_the_dev_command_serves_and_stops_cleanly(tmp_path: Path) -> None:
    mock, port = await start_mock_triton(models=("m:vllm",))
    routes = tmp_path / "routes.yaml"
    routes.write_text(route_file(1, 2))  # --upstream replaces these nodes
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apisix_openai_triton.tools.cli", "dev", "--routes", str(routes),
        "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"serving (http://127\.0\.0\.1:\d+) \(a development stand-in for "
                          r"APISIX, not a gateway", line)
        assert match, line
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{match.group(1)}/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200
                assert (await r.json())["object"] == "chat.completion"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        log = (await proc.stderr.read()).decode()
        socket_path = re.search(r"runner socket: (\S+) \(spawned\)", log)
        assert socket_path, log
        assert not os.path.exists(socket_path.group(1))
        assert "POST /v1/chat/completions -> 200 (route chat" in log
        assert "Hi" not in log  # no prompt text in the log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await mock.cleanup()


async def test_the_dev_command_explains_a_busy_port(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(route_file(1, 2))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "apisix_openai_triton.tools.cli", "dev", "--routes",
            str(routes), "--listen", f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode() and "--listen" in err.decode()


async def test_the_dev_command_refuses_a_bad_route_file(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(route_file(1, 2).replace("backend: vllm", "backend: onnx"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apisix_openai_triton.tools.cli", "dev", "--routes", str(routes),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert f"{routes}:7" in err.decode() and "backend" in err.decode()
