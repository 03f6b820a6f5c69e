"""``--metrics-listen``: the Prometheus series after real calls, in one process and with workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from test_workers_process import _children, _env, _pid_of_call, _wait_until

from apisix_openai_triton.runner import metrics as mx
from apisix_openai_triton.runner.conf_store import ConfStore
from apisix_openai_triton.runner.metrics_http import MetricsService, bind_metrics
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.registry import PluginRegistry
from apisix_openai_triton.runner.server import Server, bind_unix_socket
from apisix_openai_triton.runner.testkit import (
    GatewayClient, GatewayError, RawConnection, RunnerProcess, raw_connection,
)

pytestmark = pytest.mark.timeout(60)
P = mx.PREFIX
_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def _parse(text: str) -> dict[str, float]:
    series: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match, line
            series[match[1] + (match[2] or "")] = float(match[3])
    return series


def _scrape_blocking(port: int, path: str = "/metrics") -> tuple[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return head, body


async def _scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    return await asyncio.get_running_loop().run_in_executor(None, _scrape_blocking, port, path)


async def test_one_process_serves_the_expected_series(tmp_path: Path) -> None:
    from workers_test_plugins import CountsTokens, WhichWorker

    registry = PluginRegistry.discover(builtins=False, installed=False)
    registry.add(CountsTokens())
    registry.add(WhichWorker())
    store = ConfStore(registry)
    listening = bind_unix_socket(str(tmp_path / "r.sock"))
    live = mx.Metrics()
    metrics_sock = bind_metrics("127.0.0.1:0")
    port = metrics_sock.getsockname()[1]
    stop = asyncio.Event()
    mx.activate(live)
    tasks = [
        asyncio.create_task(Server(store, metrics=live).serve(listening.sock, stop)),
        asyncio.create_task(MetricsService(live, store, sock=metrics_sock, directory=None).run(stop)),
    ]
    try:
        async with GatewayClient(listening.path) as gateway:
            for _ in range(5):
                await gateway.request([("counts-tokens", {"model": "llama-3"})])
            for _ in range(2):
                await gateway.request([("which-worker", {}), ("counts-tokens", {"model": "x"})])
            with pytest.raises(GatewayError):
                await gateway.prepare([("no-such-plugin", {})])
        async with raw_connection(listening.path) as raw:
            await raw.send(m.HTTPReqCallRequest(id=1, conf_token=424242))
            answer = await raw.read()
            assert answer == m.ErrorResponse(m.ErrorCode.CONF_TOKEN_NOT_FOUND)
        head, body = await _scrape(port)
        assert head.startswith("HTTP/1.1 200") and "text/plain; version=0.0.4" in head
        got = _parse(body)
        assert got[P + 'calls_total{type="http_req_call"}'] == 8
        assert got[P + 'calls_total{type="prepare_conf"}'] == 3
        assert got[P + 'plugin_calls_total{phase="request",plugin="counts-tokens"}'] == 5
        assert got[P + 'plugin_calls_total{phase="request",plugin="which-worker"}'] == 2
        assert got[P + 'errors_total{kind="conf_token_not_found"}'] == 1
        assert got[P + 'errors_total{kind="conf_rejected"}'] == 1
        assert got[P + 'call_duration_seconds_count{type="http_req_call"}'] == 8
        assert got[P + 'call_duration_seconds_bucket{type="http_req_call",le="+Inf"}'] == 8
        assert 0 < got[P + 'call_duration_seconds_sum{type="http_req_call"}'] < 8
        assert got[P + 'tokens_total{model="llama-3",kind="prompt"}'] == 35
        assert got[P + 'tokens_total{model="llama-3",kind="completion"}'] == 15
        assert P + 'tokens_total{model="x",kind="prompt"}' not in got  # the chain stopped before it
        assert got[P + 'conf_store_confs{worker="0"}'] == 2
        assert got[P + "worker_restarts_total"] == 0
        head, _ = await _scrape(port, "/other")
        assert head.startswith("HTTP/1.1 404")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        mx.activate(None)
        listening.close()


def test_count_tokens_is_a_no_op_when_metrics_are_off() -> None:
    assert mx.active() is None
    mx.count_tokens("m", 1, 2)  # nothing to count into, nothing raised
    counted = mx.Metrics()
    mx.activate(counted)
    try:
        mx.count_tokens("m", 1, 2)
    finally:
        mx.activate(None)
    assert counted.tokens == {"m": [1, 2]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_workers_aggregate_and_survive_a_restart(tmp_path: Path) -> None:
    port = _free_port()
    with RunnerProcess(str(tmp_path / "r.sock"), "--workers", "2", "--plugin",
                       "workers_test_plugins:WhichWorker", "--metrics-listen", f"127.0.0.1:{port}",
                       env=_env(), cwd=str(tmp_path)) as runner:
        assert runner.proc is not None
        async with GatewayClient(runner.socket_path, pool_size=1) as gateway:
            token = await gateway.prepare([("which-worker", {})])
        conns: list[RawConnection] = []
        pids: set[int] = set()
        made = 0
        deadline = time.monotonic() + 10
        while len(pids) < 2 and time.monotonic() < deadline:  # until both workers served calls
            if len(conns) >= 32:
                await conns.pop(0).close()
            conns.append(await raw_connection(runner.socket_path))
            pids.add(await _pid_of_call(conns[-1], token))
            made += 1
        for conn in conns:
            await conn.close()
        assert len(pids) == 2

        def series() -> dict[str, float]:
            return _parse(_scrape_blocking(port)[1])

        def calls() -> float:
            return series().get(P + 'calls_total{type="http_req_call"}', -1)

        # every worker's calls are summed (the other workers' after their 1 s flush)
        _wait_until(lambda: calls() == made, 5, f"{made} calls counted")
        seen = series()
        assert seen[P + 'plugin_calls_total{phase="request",plugin="which-worker"}'] == made
        assert seen[P + 'calls_total{type="prepare_conf"}'] == 1
        assert {P + 'conf_store_confs{worker="0"}', P + 'conf_store_confs{worker="1"}'} <= set(seen)
        assert seen[P + "worker_restarts_total"] == 0
        victim = min(_children(runner.proc.pid))
        os.kill(victim, signal.SIGKILL)
        _wait_until(lambda: series().get(P + "worker_restarts_total") == 1, 10, "the restart counted")
        parent = runner.proc.pid
        _wait_until(lambda: len(_children(parent)) == 2, 10, "the replacement")
        # the replacement carries on from its predecessor's counters: nothing is lost or doubled
        _wait_until(lambda: P + 'conf_store_confs{worker="%d"}' % 0 in series(), 5, "the gauge")
        started = time.monotonic()
        while time.monotonic() - started < 1.2:  # across the replacement's first flushes
            assert calls() == made
