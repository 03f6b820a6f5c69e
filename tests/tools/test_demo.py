"""``apisix-openai-triton demo``: the README's first command, run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from apisix_openai_triton.tools import demo
from apisix_openai_triton.tools.routes import parse_route_file

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


@dataclass
class Demo:
    proc: asyncio.subprocess.Process
    banner: str
    api: str
    model: str
    socket_path: str
    children: list[int]


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def read_banner(proc: asyncio.subprocess.Process) -> str:
    """Everything the demo prints up to the end of its Python snippet."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "EOF":
        line = await proc.stdout.readline()
        if not line:
            raise AssertionError("the demo ended before it was ready:\n" + "\n".join(lines))
        lines.append(line.decode().rstrip("\n"))
    return "\n".join(lines)


@asynccontextmanager
async def running_demo(*args: str, cwd: Path) -> AsyncIterator[Demo]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apisix_openai_triton.tools.cli", "demo", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        banner = await asyncio.wait_for(read_banner(proc), READY_TIMEOUT)
        api = re.search(r"OpenAI API: +(http://127\.0\.0\.1:\d+/v1) +\(model \"([^\"]+)\"\)",
                        banner)
        sock = re.search(r"plugin runner: unix:(\S+)", banner)
        assert api and sock, banner
        yield Demo(proc, banner, api.group(1), api.group(2), sock.group(1),
                   children_of(proc.pid))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_demo_serves_the_sdk_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    async with running_demo("--port", "0", "--triton-port", "0", cwd=tmp_path) as run:
        assert run.model == "demo"
        assert f"routes:        {ROOT / 'deploy' / 'routes.yaml'}" in run.banner
        assert os.path.exists(run.socket_path)
        assert len(run.children) == 1 and alive(run.children[0])  # the runner
        async with openai.AsyncOpenAI(base_url=run.api, api_key="unused", max_retries=0,
                                      timeout=20) as client:
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]
            plain = await client.chat.completions.create(model=run.model, messages=messages)
            stream = await client.chat.completions.create(model=run.model, messages=messages,
                                                          stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream
                                if c.choices])
        assert plain.choices[0].message.content and plain.choices[0].message.content == streamed
        run.proc.send_signal(signum)
        assert await asyncio.wait_for(run.proc.wait(), STOP_TIMEOUT) == 0
        assert not os.path.exists(run.socket_path)
        assert not os.path.exists(os.path.dirname(run.socket_path))
        assert not any(alive(pid) for pid in run.children)


async def test_a_killed_demo_leaves_no_runner_behind(tmp_path: Path) -> None:
    async with running_demo("--port", "0", "--triton-port", "0", cwd=tmp_path) as run:
        (runner,) = run.children
        run.proc.kill()
        await asyncio.wait_for(run.proc.wait(), STOP_TIMEOUT)
        deadline = asyncio.get_running_loop().time() + STOP_TIMEOUT
        while alive(runner):  # the runner's parent-death signal, then its clean exit
            assert asyncio.get_running_loop().time() < deadline, "the runner outlived the demo"
            await asyncio.sleep(0.02)
    assert not os.path.exists(run.socket_path)  # removed by the runner on SIGTERM
    shutil.rmtree(os.path.dirname(run.socket_path), ignore_errors=True)


async def test_the_printed_snippets_work_as_printed(tmp_path: Path) -> None:
    async with running_demo("--port", "0", "--triton-port", "0", cwd=tmp_path) as run:
        python = run.banner.split("python - <<'EOF'\n", 1)[1].rsplit("\nEOF", 1)[0]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", python, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        plain, streamed = out.decode().splitlines()
        assert plain and plain == streamed
        curls = re.findall(r"^(curl .*\\\n  -d '.*')$", run.banner, re.MULTILINE)
        assert len(curls) == 2
        if shutil.which("curl") is None:
            pytest.skip("no curl on this machine: the Python snippet was checked")
        for command in curls:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", command, stdout=asyncio.subprocess.PIPE)
            body, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0
            assert plain.split()[0] in body.decode()


async def test_a_busy_port_names_the_flag_to_change(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args, flag in ((["--port", port, "--triton-port", "0"], "--port"),
                           (["--port", "0", "--triton-port", port], "--triton-port")):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "apisix_openai_triton.tools.cli", "demo", *args,
                cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), READY_TIMEOUT)
            assert proc.returncode == 1
            message = err.decode()
            assert f"port {port}" in message and f"choose another with {flag} PORT" in message


def test_the_built_in_routes_equal_the_shipped_file() -> None:
    shipped = parse_route_file((ROOT / "deploy" / "routes.yaml").read_text())
    built_in = parse_route_file(demo.BUILTIN_ROUTES)
    assert [(r.id, r.body) for r in built_in] == [(r.id, r.body) for r in shipped]


def test_without_the_file_the_demo_uses_its_built_in_routes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "default_route_file", lambda: None)
    routes = demo.demo_routes()
    assert routes.source == demo.BUILTIN_ROUTES_NAME
    assert [r.id for r in routes.table.routes] == [
        "openai-triton-chat", "openai-triton-completions", "openai-triton-models"]
    banner = demo.banner("http://127.0.0.1:1", "demo", "http://127.0.0.1:2", "/s",
                         routes.source)
    assert "deploy/routes.yaml is not here: using the same routes built in" in banner


def test_the_stand_in_serves_every_model_the_routes_name() -> None:
    confs: list[dict[str, Any]] = [{"model": "demo", "backend": "vllm"},
             {"models": {"a": "triton-a", "b": "triton-b"}, "backend": "tensorrtllm"},
             {"model": "plain"}]
    assert demo.triton_models(confs) == (
        "demo:vllm", "triton-a:tensorrtllm", "triton-b:tensorrtllm", "plain:generic")
    assert demo.served_model(confs) == "demo"
    assert demo.served_model([{"model": "x", "served_model_name": "llama"}]) == "llama"
    assert demo.served_model([{"models": {"a": "t", "b": "u"}, "default_model": "b"}]) == "b"
    assert demo.request_confs(demo.demo_routes().table) == [
        {"model": "demo", "backend": "vllm", "template": "llama3"}]
