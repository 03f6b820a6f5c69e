"""``run --workers 2`` as the gateway runs it: shared tokens, replaced workers, fast stop."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.testkit import GatewayClient, RawConnection, RunnerProcess, raw_connection

HERE = Path(__file__).resolve().parent
PLUGIN = "workers_test_plugins:WhichWorker"
CONF = [("which-worker", {})]
pytestmark = pytest.mark.timeout(60)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APISIX_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return {int(p) for p in handle.read().split()}


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet) is dead too
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def _pid_of_call(conn: RawConnection, token: int) -> int:
    await conn.send(m.HTTPReqCallRequest(id=1, conf_token=token))
    answer = await conn.read()
    assert isinstance(answer, m.HTTPReqCallResponse), answer
    assert isinstance(answer.action, m.Stop)
    return int(dict(answer.action.headers)["x-worker-pid"])


async def _pids_seen(path: str, token: int, *, want: int = 2, timeout: float = 10.0) -> set[int]:
    """Open connections (up to 32 kept open, like the gateway's pool) until ``want`` workers
    answered; a worker that is still starting takes none, hence the time bound."""
    conns: list[RawConnection] = []
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(pids) < want and time.monotonic() < deadline:
            if len(conns) >= 32:
                await conns.pop(0).close()
            conn = await raw_connection(path)
            conns.append(conn)
            pids.add(await _pid_of_call(conn, token))
        for conn in conns:  # every connection still open keeps working with the same token
            assert await _pid_of_call(conn, token) in pids
    finally:
        for conn in conns:
            await conn.close()
    return pids


def _start(tmp_path: Path, *args: str) -> RunnerProcess:
    return RunnerProcess(str(tmp_path / "r.sock"), "--workers", "2", "--plugin", PLUGIN,
                         "--log-level", "info", *args, env=_env(), cwd=str(tmp_path))


async def test_a_token_prepared_on_one_worker_is_valid_on_the_others(tmp_path: Path) -> None:
    with _start(tmp_path) as runner:
        assert runner.proc is not None
        async with GatewayClient(runner.socket_path, pool_size=1) as gateway:
            token = await gateway.prepare(CONF)
        pids = await _pids_seen(runner.socket_path, token)
        assert len(pids) == 2
        assert pids == _children(runner.proc.pid)


async def test_tokens_from_different_workers_never_collide(tmp_path: Path) -> None:
    with _start(tmp_path) as runner:
        conns = [await raw_connection(runner.socket_path) for _ in range(12)]
        tokens = []
        for i, conn in enumerate(conns):
            await conn.send(m.PrepareConfRequest([("which-worker", "{}")], key=f"route#{i}#pre#1"))
            answer = await conn.read()
            assert isinstance(answer, m.PrepareConfResponse)
            tokens.append(answer.conf_token)
        for conn in conns:
            await conn.close()
        assert len(set(tokens)) == len(tokens) and 0 not in tokens


async def test_a_killed_worker_is_replaced_and_service_continues(tmp_path: Path) -> None:
    with _start(tmp_path) as runner:
        assert runner.proc is not None
        parent = runner.proc.pid
        async with GatewayClient(runner.socket_path, pool_size=1) as gateway:
            token = await gateway.prepare(CONF)
        before = _children(parent)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        _wait_until(lambda: len(_children(parent)) == 2 and victim not in _children(parent), 10,
                    "a replacement worker")
        after = _children(parent)
        # the old token still works everywhere, the replacement included
        assert await _pids_seen(runner.socket_path, token) == after
        # tokens minted after the restart do not repeat the ones before it
        async with GatewayClient(runner.socket_path) as gateway:
            fresh = await asyncio.gather(*(gateway.prepare([("which-worker", {"n": i})]) for i in range(8)))
        assert token not in fresh and len(set(fresh)) == len(fresh)
        _wait_until(lambda: "restart #1" in runner.output(), 5, "the restart log line")
        assert f"worker {sorted(before).index(victim)} was killed by SIGKILL" in runner.output()


async def test_sigterm_stops_all_workers_within_a_second_and_removes_the_socket(tmp_path: Path) -> None:
    with _start(tmp_path) as runner:
        assert runner.proc is not None
        workers = _children(runner.proc.pid)
        async with GatewayClient(runner.socket_path) as gateway:  # idle keep-alive connections
            await asyncio.gather(*(gateway.request(CONF) for _ in range(4)))
            started = time.monotonic()
            runner.proc.send_signal(signal.SIGTERM)
            code = await asyncio.get_running_loop().run_in_executor(None, runner.proc.wait, 5)
            elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 1.0, elapsed
        assert not os.path.exists(runner.socket_path)
        assert not any(_alive(pid) for pid in workers)


def test_workers_exit_when_the_parent_dies(tmp_path: Path) -> None:
    with _start(tmp_path) as runner:
        assert runner.proc is not None
        workers = _children(runner.proc.pid)
        runner.proc.kill()
        runner.proc.wait()
        _wait_until(lambda: not any(_alive(pid) for pid in workers), 5, "orphaned workers to exit")


def test_one_worker_does_not_fork(tmp_path: Path) -> None:
    with RunnerProcess(str(tmp_path / "r.sock"), "--workers", "1", "--plugin", PLUGIN,
                       env=_env(), cwd=str(tmp_path)) as runner:
        assert runner.proc is not None
        assert _children(runner.proc.pid) == set()
