"""The same server on uvloop's event loop (what ``run`` uses when uvloop is installed)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from runner_test_plugins import Gate, Halt, Inspect, Prefetcher, Reshape

from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.testkit import raw_connection, run_runner

uvloop = pytest.importorskip("uvloop")


def _on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    finally:
        loop.close()


def test_calls_extra_info_prefetch_and_response_phase() -> None:
    async def scenario() -> None:
        async with run_runner(plugins=[Halt, Inspect, Prefetcher, Reshape]) as runner, \
                runner.client() as gateway:
            stop = await gateway.request([("halt", {"status": 418, "body": "tea"})])
            assert stop.response is not None and stop.response.status == 418
            seen = await gateway.request([("inspect", {"vars": ["uri"], "body": True})],
                                         path="/u", body=b"ab")
            assert seen.upstream is not None and seen.upstream.body == b"AB"
            assert seen.upstream.header("x-var-uri") == "/u"
            pre = await gateway.request([("prefetcher", {})], headers={"x-a": "1"})
            assert pre.upstream is not None and pre.upstream.header("x-seen") == "127.0.0.1|1|-|"
            resp = await gateway.response([("reshape", {})], body=b"1")
            assert resp.json() == {"wrapped": 1}

    _on_uvloop(scenario)


def test_malformed_input_and_vanishing_peer() -> None:
    async def scenario() -> None:
        gate = Gate()
        async with run_runner(plugins=[gate, Halt]) as runner:
            async with raw_connection(runner.socket_path) as raw:
                await raw.send_bytes(b"\x09\x00\x00\x01x")
                assert await raw.closed_by_peer()
            async with raw_connection(runner.socket_path) as raw:
                await raw.send(m.PrepareConfRequest([("gate", "")]))
                prepared = await raw.read()
                assert isinstance(prepared, m.PrepareConfResponse)
                await raw.send(m.HTTPReqCallRequest(id=1, conf_token=prepared.conf_token))
                await gate.entered.wait()
            await gate.cancelled.wait()  # the client went away mid-call: the call was cancelled
            async with runner.client() as gateway:
                ok = await gateway.request([("halt", {"status": 201})])
                assert ok.response is not None and ok.response.status == 201

    _on_uvloop(scenario)
