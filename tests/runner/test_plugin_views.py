"""Request and Response views: lazy decoding, cached ExtraInfo, and minimal answers."""

from __future__ import annotations

import ipaddress
from typing import Optional

import pytest

from apisix_openai_triton.runner.plugin import ConfError, Plugin, Request, Response, Stop
from apisix_openai_triton.runner.protocol import messages as m


class Recorder:
    """An ``ask`` that answers from fixed values and counts the questions."""

    def __init__(self, body: Optional[bytes] = b"{}", variables: Optional[dict[str, bytes]] = None):
        self.body = body
        self.variables = variables or {}
        self.asked: list[m.Info] = []

    async def __call__(self, info: m.Info) -> Optional[bytes]:
        self.asked.append(info)
        if isinstance(info, m.Var):
            return self.variables.get(info.name)
        return self.body


def call(**kw: object) -> m.HTTPReqCallRequest:
    base: dict[str, object] = dict(id=0, conf_token=1, method=2, path="/p",
                                   src_ip=bytes([10, 0, 0, 1]),
                                   headers=[("x-multi", "1"), ("x-multi", "2"), ("a", "b")],
                                   args=[("q", "1"), ("flag", None)])
    base.update(kw)
    return m.HTTPReqCallRequest(**base)  # type: ignore[arg-type]


async def test_untouched_request_is_no_action_and_asks_nothing() -> None:
    ask = Recorder()
    req = Request(call(), ask)
    assert req.method == "POST"
    assert req.src_ip == ipaddress.IPv4Address("10.0.0.1")
    assert req.headers.getall("x-multi") == ["1", "2"]
    req.path = "/p"  # same path is not a change
    assert req.to_action() is None
    assert ask.asked == []


async def test_ipv6_and_unknown_src_ip() -> None:
    assert Request(call(src_ip=bytes(15) + b"\x01"), Recorder()).src_ip == ipaddress.IPv6Address("::1")
    assert Request(call(src_ip=b""), Recorder()).src_ip is None


async def test_body_and_var_are_asked_once_per_call() -> None:
    ask = Recorder(body=b"hello", variables={"route_id": b"r1"})
    req = Request(call(), ask)
    assert await req.body() == b"hello"
    assert await req.body() == b"hello"
    assert await req.var("route_id") == "r1"
    assert await req.var("route_id") == "r1"
    assert await req.var("nope") is None
    assert await req.var("nope") is None
    assert ask.asked == [m.ReqBody(), m.Var("route_id"), m.Var("nope")]


async def test_primed_values_need_no_round_trip() -> None:
    ask = Recorder()
    req = Request(call(), ask)
    req.prime(b"pre", {"x": "1"})
    assert await req.body() == b"pre" and await req.var("x") == "1"
    assert ask.asked == []


async def test_absent_body_reads_as_empty() -> None:
    assert await Request(call(), Recorder(body=None)).body() == b""


async def test_rewrite_carries_only_the_changes() -> None:
    req = Request(call(), Recorder())
    req.path = "/v2/x"
    del req.headers["a"]
    req.headers.add("x-new", "1")
    req.headers.add("x-new", "2")
    req.args["q"] = "2"
    req.args.add("q", "3")
    del req.args["flag"]
    req.resp_headers["x-resp"] = "r"
    req.set_body(b"new")
    action = req.to_action()
    assert action == m.Rewrite(
        path="/v2/x",
        headers=[("a", None), ("x-new", "1, 2")],
        args=[("q", "2"), ("q", "3"), ("flag", None)],
        resp_headers=[("x-resp", "r")],
        body=b"new",
    )


def test_empty_replacement_body_is_refused() -> None:
    with pytest.raises(ValueError):
        Request(call(), Recorder()).set_body(b"")


def test_stop_json_sets_content_type_once() -> None:
    stop = Stop.json(400, {"e": 1}, {"X-A": "1"})
    assert stop.to_message() == m.Stop(400, [("content-type", "application/json"), ("x-a", "1")],
                                       b'{"e":1}')
    assert Stop.json(200, [], [("content-type", "text/x")]).headers == [("content-type", "text/x")]


def resp_call() -> m.HTTPRespCallRequest:
    return m.HTTPRespCallRequest(id=7, conf_token=3, status=200,
                                 headers=[("Content-Type", "text/plain"), ("Content-Length", "5"),
                                          ("X-Up", "1")])


async def test_untouched_response_keeps_upstream_answer() -> None:
    resp = Response(resp_call(), Recorder())
    assert resp.status == 200 and resp.headers["content-type"] == "text/plain"
    assert resp.to_message() == m.HTTPRespCallResponse(7, 0, [], b"")


async def test_new_body_sends_all_headers_but_framing_ones() -> None:
    ask = Recorder(body=b"up")
    resp = Response(resp_call(), ask)
    assert await resp.body() == b"up"
    resp.headers["content-type"] = "application/json"
    resp.set_body(b"{}")
    resp.status = 502
    assert resp.to_message() == m.HTTPRespCallResponse(
        7, 502, [("x-up", "1"), ("content-type", "application/json")], b"{}")
    assert ask.asked == [m.RespBody()]
    with pytest.raises(ValueError):
        resp.status = 42


def test_default_conf_parser_accepts_json_and_refuses_garbage() -> None:
    p: Plugin[object] = Plugin()
    assert p.parse_conf('{"a": 1}') == {"a": 1}
    assert p.parse_conf("  ") is None
    with pytest.raises(ConfError, match="not valid JSON"):
        p.parse_conf("{nope")
