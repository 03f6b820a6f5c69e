"""Faults: a runner killed under load and started again, peers that vanish mid-exchange or never
read, many idle connections, and a file-descriptor limit that is too low."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest
from reliability_kit import (
    Big, RecordCollector, SteadyClient, Tag, subprocess_env, tag_conf, wait_until,
)

from apisix_openai_triton.plugins.openai_to_triton import OpenAIToTriton
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.testkit import (
    FrameLog, GatewayClient, RequestOutcome, raw_connection, run_runner, runner_command,
)

CONNECTIONS = 50
MODELS = 5


def model_conf(k: int) -> list[tuple[str, Any]]:
    return [("openai-to-triton", {"model": f"model-{k}", "template": "chatml"})]


def chat_body(text: str) -> bytes:
    return json.dumps({"model": "x", "messages": [{"role": "user", "content": text}]}).encode()


def check_answer(outcome: RequestOutcome, k: int, text: str) -> None:
    """Correct for its conf: the Triton path names the conf's model, the prompt holds the text."""
    assert outcome.action == "rewrite", (outcome.action, outcome.error)
    assert outcome.upstream is not None
    assert outcome.upstream.path == f"/v2/models/model-{k}/generate"
    assert text in outcome.upstream.json()["text_input"]


@dataclass
class Worker:
    n: int
    gateway: GatewayClient
    good_before: int = 0
    gap_errors: list[float] = field(default_factory=list)
    after: list[RequestOutcome] = field(default_factory=list)

    @property
    def k(self) -> int:
        return self.n % MODELS

    async def call(self, i: int) -> tuple[RequestOutcome, str]:
        text = f"hello {self.n}-{i}"
        outcome = await self.gateway.request(model_conf(self.k), method="POST",
                                             path="/v1/chat/completions", body=chat_body(text))
        return outcome, text


def _start(path: str, log: Any) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(runner_command("--listen", path, "--no-uvloop"), env=subprocess_env(),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)


async def _first_good_answer(path: str, proc: "subprocess.Popen[bytes]", deadline: float) -> None:
    """Poll the new instance until it answers a call correctly (bounded)."""
    async with GatewayClient(path, connect_timeout=0.5, timeout=5.0) as probe:
        while True:
            outcome = await probe.request(model_conf(0), method="POST", path="/v1/chat/completions",
                                          body=chat_body("probe"))
            if outcome.action == "rewrite":
                check_answer(outcome, 0, "probe")
                return
            assert proc.poll() is None, "the restarted runner exited"
            assert time.monotonic() < deadline, f"no good answer after restart: {outcome.error}"
            await asyncio.sleep(0.002)  # poll interval while the new process starts


async def test_sigkill_under_50_connections_then_restart_on_the_same_path() -> None:
    directory = tempfile.mkdtemp(prefix="a6-kill-")
    path = os.path.join(directory, "runner.sock")
    log = tempfile.TemporaryFile()
    first = _start(path, log)
    second: Optional["subprocess.Popen[bytes]"] = None
    warm = asyncio.Event()
    killed = asyncio.Event()
    restarted = asyncio.Event()
    workers = [Worker(n, GatewayClient(path, pool_size=1, timeout=10.0)) for n in range(CONNECTIONS)]
    warmed = 0

    async def drive(w: Worker) -> None:
        nonlocal warmed
        i = 0
        while not killed.is_set():
            outcome, text = await w.call(i)
            i += 1
            if killed.is_set() and outcome.action == "error":
                break  # the call the kill cut short: a clean 503
            check_answer(outcome, w.k, text)
            w.good_before += 1
            if w.good_before == 2:
                warmed += 1
                if warmed == CONNECTIONS:
                    warm.set()
        started = time.monotonic()
        outcome, _ = await w.call(i)  # in the gap: nobody listens on the socket
        assert outcome.action == "error" and outcome.response is not None
        assert outcome.response.status == 503
        w.gap_errors.append(time.monotonic() - started)
        await restarted.wait()
        for j in range(3):
            outcome, text = await w.call(1000 + j)
            check_answer(outcome, w.k, text)
            w.after.append(outcome)

    try:
        await asyncio.get_running_loop().run_in_executor(None, _wait_connectable, path, first)
        tasks = [asyncio.ensure_future(drive(w)) for w in workers]
        await asyncio.wait_for(warm.wait(), 30)
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        killed.set()
        while not all(w.gap_errors for w in workers):
            done = [t for t in tasks if t.done() and t.exception() is not None]
            if done:
                raise done[0].exception()  # type: ignore[misc]
            await asyncio.sleep(0.01)  # poll interval: every worker has made its gap call
        started = time.monotonic()
        second = _start(path, log)
        await _first_good_answer(path, second, started + 10)
        restart_seconds = time.monotonic() - started
        restarted.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        for w in workers:
            await w.gateway.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(5)
        log.close()
    assert all(w.good_before >= 2 for w in workers)
    assert max(max(w.gap_errors) for w in workers) < 2.0  # failed cleanly, no hang
    for w in workers:
        first_after = w.after[0].frames
        # The old instance's token: CONF_TOKEN_NOT_FOUND, then PrepareConf and the retried call.
        error_at = first_after.index(FrameLog("to_gateway", m.MessageType.ERROR))
        assert first_after[error_at + 1:error_at + 4] == [
            FrameLog("to_runner", m.MessageType.PREPARE_CONF),
            FrameLog("to_gateway", m.MessageType.PREPARE_CONF),
            FrameLog("to_runner", m.MessageType.HTTP_REQ_CALL),
        ]
        assert all(FrameLog("to_gateway", m.MessageType.ERROR) not in o.frames for o in w.after[1:])
    print(f"\nrestart: exec to first good answer {restart_seconds * 1000:.0f} ms; "
          f"{sum(w.good_before for w in workers)} good answers before the kill")
    assert restart_seconds < 5.0


def _wait_connectable(path: str, proc: "subprocess.Popen[bytes]") -> None:
    from apisix_openai_triton.runner.testkit import wait_for_socket
    wait_for_socket(path, 15, proc)


async def test_peer_disconnects_in_the_middle_of_an_extra_info_exchange() -> None:
    """After the body question; after half an ExtraInfo answer; after a whole answer to the
    first of several questions: each time the call is dropped quietly and nothing leaks."""
    with RecordCollector() as collector:
        async with run_runner(plugins=[OpenAIToTriton, Tag]) as runner:
            steady = SteadyClient(runner.socket_path).start()
            async with GatewayClient(runner.socket_path) as gateway:
                token = await gateway.prepare(model_conf(1))
            call = m.HTTPReqCallRequest(1, token, 2, "/v1/chat/completions")
            answer = b"\x03" + len(b"x" * 64).to_bytes(3, "big")  # announces 64 bytes
            for tail in (b"", answer + b"x" * 10, answer):
                async with raw_connection(runner.socket_path) as raw:
                    await raw.send(call)
                    assert await raw.read() == m.ExtraInfoRequest(m.ReqBody())
                    await raw.send_bytes(tail)
            # the server notices each departure: only the steady client's connection is left
            await wait_until(lambda: len(runner.server.connections) == 1, what="the closes")
            calls = await steady.stop()
    assert calls > 0
    assert not collector.lines(logging.WARNING), collector.lines(logging.WARNING)


async def test_a_peer_that_never_reads_its_answers_blocks_nothing_and_buffers_little() -> None:
    """64 calls in one write for 1 MiB answers each, never read: the runner stops reading that
    peer once its answers back up, so at most a couple of answers are buffered for it, and other
    connections keep getting correct answers."""
    answer_size = 1024 * 1024
    async with run_runner(plugins=[Big, Tag]) as runner:
        steady = SteadyClient(runner.socket_path).start()
        async with GatewayClient(runner.socket_path) as gateway:
            token = await gateway.prepare([("big", {"size": answer_size})])
        from apisix_openai_triton.runner.protocol.codec import encode_to_runner
        calls = b"".join(encode_to_runner(m.HTTPReqCallRequest(i, token)) for i in range(64))
        async with raw_connection(runner.socket_path) as stuck:
            stuck.writer.transport.set_write_buffer_limits(high=1 << 22)
            stuck.writer.write(calls)
            before = steady.calls
            # the runner keeps serving others meanwhile
            await wait_until(lambda: steady.calls >= before + 200, what="steady calls")
            buffered = max(_buffered(c) for c in runner.server.connections)
            # the peer finally reads: whatever was answered arrives whole and in order
            frame = await stuck.read_frame()
            assert frame[0] == m.MessageType.HTTP_REQ_CALL
        await steady.stop()
    assert buffered <= 3 * answer_size, f"{buffered / answer_size:.1f} answers buffered for a stuck peer"


async def test_a_thousand_idle_connections_stay_open_and_served() -> None:
    idle = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * idle + 200  # both ends live in this process
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the hard open-file limit {hard} is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        async with run_runner(plugins=[Tag], read_timeout=0.2) as runner:
            steady = SteadyClient(runner.socket_path).start()
            conns = [await raw_connection(runner.socket_path) for _ in range(idle)]
            async with GatewayClient(runner.socket_path) as gateway:
                token = await gateway.prepare(tag_conf("idle"))
            # well past the read timeout, every idle connection is still open and answers
            assert len(runner.server.connections) >= idle
            for i, raw in enumerate(conns):
                await raw.send(m.HTTPReqCallRequest(i, token, path=f"/{i}"))
            for i, raw in enumerate(conns):
                answer = await raw.read()
                assert isinstance(answer, m.HTTPReqCallResponse) and answer.id == i
                assert isinstance(answer.action, m.Stop) and answer.action.body == f"idle|/{i}".encode()
            for raw in conns:
                await raw.close()
            assert await steady.stop() > 0
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _buffered(conn: Any) -> int:
    """Bytes of answers the runner holds for a connection that its peer has not read yet."""
    transport = conn._transport
    return 0 if transport is None else int(transport.get_write_buffer_size())


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_a_low_fd_limit_is_reported_clearly_at_start(tmp_path: Any) -> None:
    path = str(tmp_path / "r.sock")
    proc = subprocess.Popen(runner_command("--listen", path), env=subprocess_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_low_fd_limit)
    try:
        _wait_connectable(path, proc)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=5)
    lines = [line for line in output.decode().splitlines() if "open-file limit is 256" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], output


def test_a_raisable_fd_limit_is_raised_quietly() -> None:
    from apisix_openai_triton.runner.fdlimit import ensure_fd_limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip("the hard limit is too low here to raise to 4096")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        assert ensure_fd_limit(4096) == 4096
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 4096
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
