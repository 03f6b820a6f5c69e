"""The runner's calls over its real socket, driven by the gateway-side test kit."""

from __future__ import annotations

import logging

import pytest
from runner_test_plugins import Boom, Edit, Halt, Huge, Inspect, Noop, Prefetcher, Reshape, Strict

from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.testkit import Conf, FrameLog, raw_connection, run_runner

TO_RUNNER, TO_GATEWAY = "to_runner", "to_gateway"
T = m.MessageType


async def test_prepare_conf_then_calls_reuse_token_and_connection() -> None:
    async with run_runner(plugins=[Noop]) as runner, runner.client() as gateway:
        conf = [("noop", "{}")]
        first = await gateway.request(conf)
        second = await gateway.request(conf, path="/two")
        assert first.action == second.action == "none"
        assert first.frames == [
            FrameLog(TO_RUNNER, T.PREPARE_CONF), FrameLog(TO_GATEWAY, T.PREPARE_CONF),
            FrameLog(TO_RUNNER, T.HTTP_REQ_CALL), FrameLog(TO_GATEWAY, T.HTTP_REQ_CALL),
        ]
        assert second.frames == first.frames[2:]  # token cached: no second PrepareConf
        assert gateway.connections_opened == 1
        assert second.upstream is not None and second.upstream.path == "/two"
        token = gateway.token(conf)
        assert token is not None and token != 0


async def test_call_id_zero_and_large_ids_are_echoed() -> None:
    async with run_runner(plugins=[Halt]) as runner, runner.client() as gateway:
        for call_id in (0, 1, (7 << 22) + 12345, 0xFFFFFFFF):
            outcome = await gateway.request([("halt", {"status": 204})], call_id=call_id)
            assert outcome.answer is not None and outcome.answer.id == call_id


async def test_stop_with_headers_and_body() -> None:
    conf = [("halt", {"status": 429, "headers": [["X-Limit", "1"], ["x-limit", "2"], ["Retry-After", "3"]],
                      "body": "slow down"})]
    async with run_runner(plugins=[Halt, Edit]) as runner, runner.client() as gateway:
        outcome = await gateway.request(conf + [("edit", {"path": "/never"})])
        assert outcome.action == "stop" and outcome.response is not None
        assert outcome.response.status == 429
        assert outcome.response.headers == [("x-limit", "1"), ("x-limit", "2"), ("retry-after", "3")]
        assert outcome.response.body == b"slow down"
        assert outcome.upstream is None  # the chain ended: edit never ran


async def test_rewrite_sends_only_deltas() -> None:
    conf = [("edit", {
        "path": "/v2/x", "set_headers": [["x-new", "1"]], "del_headers": ["x-secret"],
        "del_args": ["drop"], "set_args": [["keep", "changed"]], "add_args": [["multi", "b"]],
        "body": "new body", "resp_headers": [["x-resp", "r"], ["content-type", "ignored"]],
    })]
    headers = [("X-Multi", "one"), ("X-Multi", "two"), ("X-Secret", "s"), ("Content-Length", "3"),
               ("Host", "example.test")]
    args = [("drop", "1"), ("keep", "k"), ("multi", "a"), ("flag", None)]
    async with run_runner(plugins=[Edit]) as runner, runner.client() as gateway:
        outcome = await gateway.request(conf, method="POST", path="/v1/x", headers=headers,
                                        args=args, body=b"old")
    assert outcome.action == "rewrite"
    assert outcome.answer is not None and isinstance(outcome.answer.action, m.Rewrite)
    wire = outcome.answer.action
    assert wire.path == "/v2/x"
    # only what changed travels: the untouched multi-value header is not echoed
    assert sorted(wire.headers, key=str) == sorted([("x-new", "1"), ("x-secret", None)], key=str)
    assert ("drop", None) in wire.args and all(name != "flag" for name, _ in wire.args)
    upstream = outcome.upstream
    assert upstream is not None
    assert upstream.path == "/v2/x"
    assert upstream.header_values("x-multi") == ["one", "two"]
    assert upstream.header("x-secret") is None and upstream.header("x-new") == "1"
    assert upstream.arg_values("drop") == [] and upstream.arg_values("keep") == ["changed"]
    assert upstream.arg_values("multi") == ["a", "b"] and upstream.arg_values("flag") == [None]
    assert upstream.body == b"new body" and upstream.header("content-length") == "8"
    assert outcome.resp_headers == [("x-resp", "r")]  # content-type is ignored by the gateway


async def test_no_change_is_no_action() -> None:
    async with run_runner(plugins=[Edit]) as runner, runner.client() as gateway:
        outcome = await gateway.request([("edit", {})], headers={"x": "1"})
    assert outcome.action == "none" and outcome.answer is not None and outcome.answer.action is None


async def test_extra_info_var_and_body_round_trips() -> None:
    conf = [("inspect", {"vars": ["remote_addr", "http_x_user", "arg_q", "missing"], "body": True})]
    async with run_runner(plugins=[Inspect]) as runner, runner.client() as gateway:
        outcome = await gateway.request(conf, method="POST", headers={"X-User": "ann"},
                                        args=[("q", "7")], body=b"hello", src_ip="10.1.2.3")
    upstream = outcome.upstream
    assert upstream is not None
    assert upstream.header("x-var-remote_addr") == "10.1.2.3"
    assert upstream.header("x-var-http_x_user") == "ann"
    assert upstream.header("x-var-arg_q") == "7"
    assert upstream.header("x-var-missing") == "<absent>"
    assert upstream.header("x-body-len") == "5" and upstream.body == b"HELLO"
    assert outcome.extra_info_round_trips == 5
    # each question waits for its answer: strictly alternating
    exchange = [f.direction for f in outcome.frames if f.type == T.EXTRA_INFO]
    assert exchange == [TO_GATEWAY, TO_RUNNER] * 5


async def test_empty_body_is_absent_and_reads_as_empty() -> None:
    async with run_runner(plugins=[Inspect]) as runner, runner.client() as gateway:
        outcome = await gateway.request([("inspect", {"body": True})])
    assert outcome.upstream is not None and outcome.upstream.header("x-body-len") == "0"


async def test_prefetch_primes_the_filter_in_one_wait() -> None:
    async with run_runner(plugins=[Prefetcher]) as runner, runner.client() as gateway:
        outcome = await gateway.request([("prefetcher", {})], headers={"X-A": "aa"}, body=b"B",
                                        src_ip="::1")
    assert outcome.upstream is not None
    assert outcome.upstream.header("x-seen") == "::1|aa|-|B"
    assert outcome.extra_info_round_trips == 4  # the filter's own awaits asked nothing more


async def test_prefetch_sends_questions_back_to_back() -> None:
    async with run_runner(plugins=[Prefetcher]) as runner:
        async with raw_connection(runner.socket_path, timeout=2.0) as raw:
            await raw.send(m.PrepareConfRequest([("prefetcher", "{}")]))
            prepared = await raw.read()
            assert isinstance(prepared, m.PrepareConfResponse)
            await raw.send(m.HTTPReqCallRequest(id=3, conf_token=prepared.conf_token,
                                                headers=[("x-a", "v")]))
            # all four questions arrive before any of them is answered
            questions = [await raw.read() for _ in range(4)]
            assert [q.info for q in questions if isinstance(q, m.ExtraInfoRequest)] == [
                m.ReqBody(), m.Var("remote_addr"), m.Var("http_x_a"), m.Var("no_such_var"),
            ]
            for answer in (b"body", b"1.2.3.4", b"v", None):
                await raw.send(m.ExtraInfoResponse(answer))
            final = await raw.read()
    assert isinstance(final, m.HTTPReqCallResponse) and final.id == 3
    assert isinstance(final.action, m.Rewrite)
    assert final.action.headers == [("x-seen", "1.2.3.4|v|-|body")]


async def test_prefetch_only_for_phases_the_plugin_implements() -> None:
    async with run_runner(plugins=[Reshape]) as runner, runner.client() as gateway:
        outcome = await gateway.request([("reshape", {})])
    # Reshape declares a var but has no request filter: the request phase asks nothing
    assert outcome.action == "none" and outcome.extra_info_round_trips == 0


async def test_response_call_with_resp_body_and_var() -> None:
    async with run_runner(plugins=[Reshape]) as runner, runner.client() as gateway:
        outcome = await gateway.response(
            [("reshape", {"status": 201})], status=200,
            headers=[("Content-Type", "text/plain"), ("X-Up", "1")], body=b'{"a":1}',
            request_headers={"X-Req": "from-request"},
        )
    assert outcome.action == "answered"
    assert outcome.status == 201
    assert outcome.json() == {"wrapped": {"a": 1}}
    assert outcome.header("content-type") == "application/json"
    assert outcome.header("x-seen") == "from-request"
    assert outcome.header("x-up") is None
    assert outcome.frames.count(FrameLog(TO_GATEWAY, T.EXTRA_INFO)) == 2


async def test_response_call_without_response_filter_keeps_upstream() -> None:
    async with run_runner(plugins=[Noop]) as runner, runner.client() as gateway:
        outcome = await gateway.response([("noop", "")], status=404,
                                         headers={"content-type": "text/html", "x-a": "1"}, body=b"nf")
    assert outcome.action == "answered" and outcome.status == 404 and outcome.body == b"nf"
    assert outcome.headers == [("x-a", "1")]  # content-type is among the names the gateway drops


async def test_unknown_token_answers_not_found_and_the_retry_succeeds() -> None:
    async with run_runner(plugins=[Halt]) as runner:
        async with runner.client() as gateway:
            conf = Conf.of([("halt", {"status": 202})])
            await gateway.prepare(conf)
            # simulate a runner restart: the gateway's token is unknown to the runner now
            gateway._tokens[conf] = (gateway._tokens[conf] + 1) % (1 << 32) or 1
            outcome = await gateway.request(conf)
            assert outcome.action == "stop" and outcome.response is not None
            assert outcome.response.status == 202
            kinds = [(f.direction, f.type) for f in outcome.frames]
            assert kinds[:2] == [(TO_RUNNER, T.HTTP_REQ_CALL), (TO_GATEWAY, T.ERROR)]
            assert kinds[2:4] == [(TO_RUNNER, T.PREPARE_CONF), (TO_GATEWAY, T.PREPARE_CONF)]
        async with raw_connection(runner.socket_path) as raw:
            await raw.send(m.HTTPReqCallRequest(id=9, conf_token=12345))
            answer = await raw.read()
            assert answer == m.ErrorResponse(m.ErrorCode.CONF_TOKEN_NOT_FOUND)


@pytest.mark.parametrize("conf, reason", [
    ([("nope", "{}")], "'nope': no such plugin"),
    ([("strict", '{"ok": false}')], "'strict': ok must be true"),
    ([("strict", "{not json")], "'strict': conf is not valid JSON"),
])
async def test_bad_conf_is_refused_with_a_log_line(
    conf: list[tuple[str, str]], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="apisix_openai_triton")
    async with run_runner(plugins=[Strict]) as runner, runner.client() as gateway:
        outcome = await gateway.request(Conf(tuple(conf), key="route#r1#ext-plugin-pre-req#3"))
        degraded = await gateway.request(Conf(tuple(conf)), allow_degradation=True, path="/p")
    assert outcome.action == "error" and outcome.response is not None
    assert outcome.response.status == 503 and outcome.error == "PrepareConf refused: BAD_REQUEST"
    assert degraded.action == "degraded" and degraded.upstream is not None
    assert degraded.upstream.path == "/p"
    lines = [r.getMessage() for r in caplog.records if "PrepareConf refused" in r.getMessage()]
    assert any(reason in line and "route#r1#ext-plugin-pre-req#3" in line for line in lines), lines


async def test_plugin_exception_is_503_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="apisix_openai_triton")
    async with run_runner(plugins=[Boom, Halt]) as runner, runner.client() as gateway:
        outcome = await gateway.request([("boom", "")])
        response = await gateway.response([("boom", "")], status=200, body=b"x")
        after = await gateway.request([("halt", {"status": 201})])
    assert outcome.action == "error" and outcome.response is not None
    assert outcome.response.status == 503
    assert outcome.error == "runner answered error SERVICE_UNAVAILABLE"
    assert response.action == "error" and response.status == 503
    assert after.response is not None and after.response.status == 201  # the runner lives on
    failures = [r for r in caplog.records if "'boom' failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None and "boom in a" in str(r.exc_info[1]) for r in failures)


async def test_an_answer_too_large_for_a_frame_is_503(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="apisix_openai_triton")
    async with run_runner(plugins=[Huge]) as runner, runner.client() as gateway:
        outcome = await gateway.request([("huge", "")])
    assert outcome.action == "error" and outcome.error == "runner answered error SERVICE_UNAVAILABLE"
    assert any("cannot be sent" in r.getMessage() for r in caplog.records)


async def test_plugins_run_in_conf_order() -> None:
    conf = [("edit", {"set_headers": [["x-order", "first"]]}),
            ("inspect", {"vars": ["uri"]}),
            ("edit", {"set_headers": [["x-order", "second"]], "path": "/final"})]
    async with run_runner(plugins=[Edit, Inspect]) as runner, runner.client() as gateway:
        outcome = await gateway.request(conf, path="/orig")
    assert outcome.upstream is not None
    assert outcome.upstream.header("x-order") == "second"
    assert outcome.upstream.header("x-var-uri") == "/orig"
    assert outcome.upstream.path == "/final"


async def test_prepare_conf_dedups_by_key() -> None:
    async with run_runner(plugins=[Noop]) as runner:
        async with runner.client() as one, runner.client() as two:
            conf = Conf.of([("noop", {})], key="route#1#ext-plugin-pre-req#7")
            other = Conf.of([("noop", {"v": 2})], key="route#1#ext-plugin-pre-req#8")
            assert await one.prepare(conf) == await two.prepare(conf)
            assert await one.prepare(other) != await one.prepare(conf)
        assert len(runner.store) == 2
