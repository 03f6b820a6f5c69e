"""Malformed input, stalled and vanishing peers, load, and shutdown, over the real socket."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from runner_test_plugins import Gate, Halt, Inspect, Mirror

from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.testkit import GatewayClient, RawConnection, raw_connection, run_runner

PREPARE, CALL, EXTRA = 1, 2, 3


async def _prepare(raw: RawConnection, conf: list[tuple[str, str]]) -> int:
    await raw.send(m.PrepareConfRequest(conf))
    answer = await raw.read()
    assert isinstance(answer, m.PrepareConfResponse)
    return answer.conf_token


async def _still_serves(socket_path: str) -> None:
    async with GatewayClient(socket_path) as gateway:
        outcome = await gateway.request([("halt", {"status": 201})])
    assert outcome.response is not None and outcome.response.status == 201


@pytest.mark.parametrize("junk", [
    pytest.param(b"\xff\x00\x00\x04abcd", id="garbage-type"),
    pytest.param(b"\x02\x00\x00\x00", id="zero-length"),
    pytest.param(b"\x02\x00\x00\x03\x01\x02\x03", id="not-a-flatbuffer"),
    pytest.param(b"\x02\x00\x00\x08\xff\xff\xff\x7f\x00\x00\x00\x00", id="root-offset-out-of-range"),
    pytest.param(b"\x00\x00\x00\x04\x04\x00\x00\x00", id="error-type-from-gateway"),
])
async def test_malformed_input_closes_only_that_connection(
    junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="apisix_openai_triton")
    async with run_runner(plugins=[Halt]) as runner:
        async with raw_connection(runner.socket_path) as bystander, \
                raw_connection(runner.socket_path) as raw:
            token = await _prepare(bystander, [("halt", '{"status": 203}')])
            await raw.send_bytes(junk)
            assert await raw.closed_by_peer()
            await bystander.send(m.HTTPReqCallRequest(id=1, conf_token=token))
            answer = await bystander.read()
            assert isinstance(answer, m.HTTPReqCallResponse) and isinstance(answer.action, m.Stop)
        await _still_serves(runner.socket_path)
    violations = [r for r in caplog.records if "protocol violation" in r.getMessage()]
    assert len(violations) == 1 and "\n" not in violations[0].getMessage()


async def test_extra_info_answer_nobody_asked_for_closes() -> None:
    async with run_runner(plugins=[Halt]) as runner:
        async with raw_connection(runner.socket_path) as raw:
            await raw.send(m.ExtraInfoResponse(b"unasked"))
            assert await raw.closed_by_peer()
        await _still_serves(runner.socket_path)


async def test_prepare_conf_in_the_middle_of_an_extra_info_exchange_closes() -> None:
    async with run_runner(plugins=[Inspect, Halt]) as runner:
        async with raw_connection(runner.socket_path) as raw:
            token = await _prepare(raw, [("inspect", '{"vars": ["uri"]}')])
            await raw.send(m.HTTPReqCallRequest(id=1, conf_token=token))
            question = await raw.read()
            assert question == m.ExtraInfoRequest(m.Var("uri"))
            await raw.send(m.PrepareConfRequest([("halt", "{}")]))
            assert await raw.closed_by_peer()
        await _still_serves(runner.socket_path)


async def test_truncated_payload_then_disconnect_is_harmless() -> None:
    async with run_runner(plugins=[Halt]) as runner:
        async with raw_connection(runner.socket_path) as raw:
            await raw.send_bytes(b"\x02\x00\x01\x00" + b"\x00" * 100)  # announces 256 bytes
        await _still_serves(runner.socket_path)
        assert not any(c.in_call for c in runner.server.connections)


async def test_peer_stuck_mid_frame_is_closed_after_the_read_timeout() -> None:
    async with run_runner(plugins=[Halt], read_timeout=0.3) as runner:
        async with raw_connection(runner.socket_path, timeout=3.0) as raw:
            started = time.monotonic()
            await raw.send_bytes(b"\x02\x00")  # half a header, then silence
            assert await raw.closed_by_peer()
            assert 0.25 <= time.monotonic() - started < 2.0
        await _still_serves(runner.socket_path)


async def test_peer_silent_instead_of_answering_extra_info_is_closed() -> None:
    async with run_runner(plugins=[Inspect], read_timeout=0.3) as runner:
        async with raw_connection(runner.socket_path, timeout=3.0) as raw:
            token = await _prepare(raw, [("inspect", '{"body": true}')])
            await raw.send(m.HTTPReqCallRequest(id=1, conf_token=token))
            assert await raw.read() == m.ExtraInfoRequest(m.ReqBody())
            assert await raw.closed_by_peer()


async def test_idle_keep_alive_connection_is_not_timed_out() -> None:
    async with run_runner(plugins=[Halt], read_timeout=0.2) as runner:
        async with raw_connection(runner.socket_path, timeout=0.6) as raw:
            token = await _prepare(raw, [("halt", "{}")])
            assert not await raw.closed_by_peer()  # 0.6 s idle, three read timeouts
            await raw.send(m.HTTPReqCallRequest(id=5, conf_token=token))
            answer = await raw.read()
            assert isinstance(answer, m.HTTPReqCallResponse) and answer.id == 5


async def test_client_that_disconnects_mid_call_is_abandoned_cleanly(
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="apisix_openai_triton")
    gate = Gate()
    async with run_runner(plugins=[gate, Halt, Inspect]) as runner:
        async with raw_connection(runner.socket_path) as raw:
            token = await _prepare(raw, [("gate", "")])
            await raw.send(m.HTTPReqCallRequest(id=1, conf_token=token))
            await asyncio.wait_for(gate.entered.wait(), 5)
        await asyncio.wait_for(gate.cancelled.wait(), 5)  # the plugin's await was cancelled
        async with raw_connection(runner.socket_path) as raw:
            token = await _prepare(raw, [("inspect", '{"vars": ["uri"]}')])
            await raw.send(m.HTTPReqCallRequest(id=2, conf_token=token))
            assert await raw.read() == m.ExtraInfoRequest(m.Var("uri"))
        await _still_serves(runner.socket_path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_200_connections_each_doing_50_calls() -> None:
    clients = 200
    calls = 50
    async with run_runner(plugins=[Mirror]) as runner:
        conf = [("mirror", "")]

        async def one_connection(n: int) -> int:
            async with GatewayClient(runner.socket_path, pool_size=1) as gateway:
                for i in range(calls):
                    tag = f"{n}-{i}"
                    outcome = await gateway.request(conf, path=f"/p/{tag}", headers={"x-in": tag},
                                                    call_id=n * calls + i)
                    assert outcome.upstream is not None and outcome.answer is not None
                    assert outcome.upstream.header("x-out") == f"{tag}@/p/{tag}"
                    assert outcome.answer.id == n * calls + i
                return gateway.connections_opened

        opened = await asyncio.wait_for(
            asyncio.gather(*(one_connection(n) for n in range(clients))), 60
        )
    assert opened == [1] * clients


async def test_shutdown_lets_an_in_flight_call_finish() -> None:
    gate = Gate()
    async with run_runner(plugins=[gate, Halt]) as runner:
        async with GatewayClient(runner.socket_path) as idle:
            await idle.request([("halt", "")])  # leaves an idle keep-alive connection
            call = asyncio.ensure_future(
                GatewayClient(runner.socket_path).request([("gate", "")], path="/in-flight")
            )
            await asyncio.wait_for(gate.entered.wait(), 5)
            stopping = asyncio.ensure_future(runner.stop())
            for _ in range(100):  # yield to the loop until the drain has begun
                if runner.server.draining:
                    break
                await asyncio.sleep(0)
            assert runner.server.draining and gate.cancelled.is_set() is False
            gate.release.set()
            outcome = await asyncio.wait_for(call, 5)
            await asyncio.wait_for(stopping, 5)
    assert outcome.upstream is not None and outcome.upstream.header("x-gate") == "passed"
    assert not runner.server.connections


async def test_shutdown_drops_a_call_that_outlives_the_grace() -> None:
    gate = Gate()
    async with run_runner(plugins=[gate], shutdown_grace=0.2) as runner:
        call = asyncio.ensure_future(GatewayClient(runner.socket_path).request([("gate", "")]))
        await asyncio.wait_for(gate.entered.wait(), 5)
        started = time.monotonic()
        await runner.stop()
        assert time.monotonic() - started < 1.0
        outcome = await asyncio.wait_for(call, 5)
    assert outcome.action == "error"
    assert gate.cancelled.is_set()
