"""The ``mock-triton`` command: flags, model specs, and a real process started and stopped."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys

import aiohttp
import pytest

from apisix_openai_triton.tools.mock_triton import DEFAULT_MODELS, _options, add_commands
from apisix_openai_triton.tools.mock_triton_models import ModelSpecError, parse_model_spec


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["mock-triton", *argv])


def test_defaults() -> None:
    args = parse()
    assert (args.host, args.port, args.backend) == ("127.0.0.1", 8000, "generic")
    options = _options(args)
    assert options.models == DEFAULT_MODELS and options.fail_after is None
    assert callable(args.func)


def test_flags_map_to_options() -> None:
    options = _options(parse("--model", "a:vllm", "--model", "b", "--backend", "tensorrtllm",
                             "--fail-after", "3", "--fault", "slow", "--token-delay-ms", "20",
                             "--slow-ms", "1500", "--trtllm-legacy"))
    assert options.models == ("a:vllm", "b") and options.backend == "tensorrtllm"
    assert (options.fail_after, options.fault, options.token_delay, options.slow_delay) == (
        3, "slow", 0.02, 1.5)
    assert options.trtllm_legacy


def test_model_specs() -> None:
    assert parse_model_spec("m").backend == "generic"
    assert parse_model_spec("m", "vllm").decoupled
    trt = parse_model_spec("e:tensorrtllm:coupled")
    assert (trt.backend, trt.decoupled) == ("tensorrtllm", False)
    assert parse_model_spec("g:generic:decoupled").decoupled
    for bad in ("", ":vllm", "m:onnx", "m:vllm:coupled", "m:generic:sometimes"):
        with pytest.raises(ModelSpecError):
            parse_model_spec(bad)


async def _run_cli(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apisix_openai_triton.tools.cli", "mock-triton", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_the_command_serves_and_stops_cleanly_on_sigint() -> None:
    proc = await _run_cli("--port", "0", "--model", "llama:vllm", "--model", "plain")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        base = f"http://127.0.0.1:{int(match.group(1))}"
        body = {"text_input": "hi", "parameters": {"max_tokens": 3}}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v2/models/plain/generate", data=json.dumps(body)) as r:
                assert r.status == 200 and len((await r.json())["text_output"].split()) == 3
            async with http.get(f"{base}/v2/models/llama/config") as r:
                assert (await r.json())["backend"] == "vllm"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_model_spec_exits_2_with_a_message() -> None:
    proc = await _run_cli("--port", "0", "--model", "m:onnx")
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2 and b"backend must be one of" in err
