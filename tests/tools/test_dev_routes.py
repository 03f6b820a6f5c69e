"""Route objects compiled for the dev gateway, matched the way APISIX's router matches them."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from apisix_openai_triton.tools.dev_gateway import (
    default_route_file,
    load_routes,
    parse_args,
    parse_listen,
    repo_route_file,
)
from apisix_openai_triton.tools.dev_routes import (
    RouteCompileError,
    UpstreamNodes,
    compile_route,
    compile_routes,
)
from apisix_openai_triton.tools.routes import Route

ROOT = Path(__file__).resolve().parents[2]


def route(route_id: str, **body: Any) -> Route:
    return Route(route_id, body if "uris" in body else {"uri": "/", **body}, 1)


def test_the_shipped_route_file_compiles_with_its_plugin_steps() -> None:
    table = load_routes(str(ROOT / "deploy" / "routes.yaml"), "127.0.0.1:8001")
    by_id = {r.id: r for r in table.routes}
    chat = by_id["openai-triton-chat"]
    assert chat.uris == ("/v1/chat/completions",) and chat.methods is None
    (pre,) = chat.request_steps
    assert pre.conf.key == "route#openai-triton-chat#ext-plugin-pre-req#1"
    assert [name for name, _ in pre.conf.entries] == ["openai-to-triton"]
    assert json.loads(pre.conf.entries[0][1])["model"] == "demo"
    assert chat.response_step is not None and not chat.response_step.allow_degradation
    assert chat.upstream is not None and chat.upstream.nodes == (("127.0.0.1:8001", 1),)
    models = by_id["openai-triton-models"]
    assert models.response_step is None and models.upstream is None


def test_exact_beats_prefix_and_longer_prefix_beats_shorter() -> None:
    table = compile_routes([
        route("all", uri="/*"), route("v1", uri="/v1/*"), route("chat", uri="/v1/chat"),
    ])
    assert table.match("GET", "/v1/chat", None).id == "chat"  # type: ignore[union-attr]
    assert table.match("GET", "/v1/chat/x", None).id == "v1"  # type: ignore[union-attr]
    assert table.match("GET", "/other", None).id == "all"  # type: ignore[union-attr]
    assert compile_routes([route("chat", uri="/v1/chat")]).match("GET", "/v1/chats", None) is None


def test_priority_wins_over_the_uri_kind() -> None:
    table = compile_routes([route("exact", uri="/a"), route("prio", uri="/*", priority=5)])
    assert table.match("GET", "/a", None).id == "prio"  # type: ignore[union-attr]


def test_methods_and_hosts_restrict_a_route() -> None:
    table = compile_routes([
        route("post", uris=["/x", "/y"], methods=["POST"], hosts=["api.example", "*.corp"]),
    ])
    assert table.match("POST", "/y", "api.example:9080") is not None
    assert table.match("POST", "/x", "llm.corp") is not None
    assert table.match("GET", "/x", "api.example") is None
    assert table.match("POST", "/x", "other.example") is None
    assert table.match("POST", "/x", None) is None


def test_retarget_replaces_every_upstream_and_keeps_routes_without_one() -> None:
    table = compile_routes([
        route("a", upstream={"nodes": {"triton:8000": 1, "triton2:8000": 3}}),
        route("b"),
    ]).retarget("127.0.0.1:9")
    a, b = table.routes
    assert a.upstream is not None and a.upstream.nodes == (("127.0.0.1:9", 1),)
    assert b.upstream is None


def test_weighted_node_choice_skips_weight_zero() -> None:
    nodes = UpstreamNodes((("a:1", 3), ("b:1", 1), ("c:1", 0)))
    counts = Counter(nodes.pick() for _ in range(2000))
    assert set(counts) == {"a:1", "b:1"}
    assert 2.2 < counts["a:1"] / counts["b:1"] < 4.2


def test_host_header_policies() -> None:
    assert UpstreamNodes((("n:1", 1),)).host_header("n:1", "client") == "client"
    assert UpstreamNodes((("n:1", 1),), pass_host="node").host_header("n:1", "client") == "n:1"
    rewrite = UpstreamNodes((("n:1", 1),), pass_host="rewrite", upstream_host="up.example")
    assert rewrite.host_header("n:1", "client") == "up.example"


def test_upstream_forms_and_timeouts() -> None:
    compiled = compile_route(route("r", upstream={
        "nodes": [{"host": "h", "port": 1, "weight": 2}], "scheme": "https",
        "timeout": {"connect": 1, "send": 2, "read": 3}}))
    up = compiled.upstream
    assert up is not None and up.nodes == (("h:1", 2),) and up.scheme == "https"
    assert (up.connect_timeout, up.read_timeout) == (1.0, 3.0)
    with pytest.raises(RouteCompileError, match="weight > 0"):
        compile_route(route("r", upstream={"nodes": {"h:1": 0}}))
    with pytest.raises(RouteCompileError, match="conf"):
        compile_route(route("r", plugins={"ext-plugin-pre-req": {"conf": "x"}}))


def test_query_args_keep_valueless_flags() -> None:
    assert parse_args("a=1&flag&b=x%20y&b=2&&c=") == [
        ("a", "1"), ("flag", None), ("b", "x y"), ("b", "2"), ("c", "")]
    assert parse_args("") == []


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9080") == ("127.0.0.1", 9080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9080", "host:", "host:99999", ":80"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_listen(bad)


def test_default_route_file_prefers_the_working_directory(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert repo_route_file() == ROOT / "deploy" / "routes.yaml"
    monkeypatch.chdir(tmp_path)
    assert default_route_file() == repo_route_file()  # from a clone: found wherever you are
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "routes.yaml").write_text("version: 1\n")
    assert default_route_file() == tmp_path / "deploy" / "routes.yaml"
