"""The shipped route file (deploy/routes.yaml), its committed JSON twins, the export command,
and conf checks with the real plugin classes once they are installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from apisix_openai_triton.tools.cli import main
from apisix_openai_triton.tools.routes import (
    RouteFileError, load_route_file, plugin_validators, route_json,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "routes.yaml"
JSON_DIR = ROOT / "deploy" / "routes"
REGENERATE = "apisix-openai-triton routes export deploy/routes.yaml --out deploy/routes"


def _plugins_installed() -> bool:
    return all(importlib.util.find_spec(f"apisix_openai_triton.plugins.{m}") is not None
               for m in ("openai_to_triton", "triton_to_openai"))


def test_committed_json_matches_the_route_file() -> None:
    routes = load_route_file(str(SHIPPED))
    committed = {p.name for p in JSON_DIR.glob("*.json")}
    assert committed == {f"{r.id}.json" for r in routes}, f"regenerate: {REGENERATE}"
    for route in routes:
        assert (JSON_DIR / f"{route.id}.json").read_text(encoding="utf-8") == route_json(route), \
            f"deploy/routes/{route.id}.json is stale; regenerate: {REGENERATE}"


def test_shipped_routes_cover_the_three_endpoints_on_the_compose_triton() -> None:
    routes = {r.body.get("uri"): r for r in load_route_file(str(SHIPPED))}
    assert set(routes) == {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    for uri in ("/v1/chat/completions", "/v1/completions"):
        body = routes[uri].body
        assert body["upstream"]["nodes"] == {"triton:8000": 1}
        assert set(body["plugins"]) == {"ext-plugin-pre-req", "ext-plugin-post-resp"}
    models = routes["/v1/models"].body
    assert "upstream" not in models and set(models["plugins"]) == {"ext-plugin-pre-req"}
    assert all(r.notes == () for r in routes.values())


def test_export_writes_the_same_files_and_removes_only_its_own_stale_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old-route.json").write_text(json.dumps(
        {"uri": "/old", "labels": {"managed-by": "apisix-openai-triton"}}))
    (tmp_path / "someone-elses.json").write_text('{"uri": "/theirs"}')
    assert main(["routes", "export", str(SHIPPED), "--out", str(tmp_path), "--no-validate"]) == 0
    written = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    expected = {p.name: p.read_text() for p in JSON_DIR.glob("*.json")}
    assert written == {**expected, "someone-elses.json": '{"uri": "/theirs"}'}
    assert capsys.readouterr().out.count("wrote ") == len(expected)


@pytest.mark.skipif(not _plugins_installed(), reason="the plugin modules are not written yet")
def test_shipped_confs_pass_the_real_plugins() -> None:
    routes = load_route_file(str(SHIPPED), validators=plugin_validators())
    assert len(routes) == 3


@pytest.mark.skipif(not _plugins_installed(), reason="the plugin modules are not written yet")
def test_real_plugins_refuse_a_bad_conf_with_the_file_line(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text(SHIPPED.read_text().replace("    template: llama3\n",
                                               "    template: llama3\n    no_such_key: 1\n"))
    with pytest.raises(RouteFileError) as info:
        load_route_file(str(bad), validators=plugin_validators())
    assert info.value.route == "openai-triton-chat"
    assert info.value.key is not None and info.value.key.startswith("openai-to-triton")
    assert info.value.line is not None


def test_missing_plugin_is_reported_by_name() -> None:
    with pytest.raises(ImportError, match="cannot load plugin 'no-such-plugin'"):
        plugin_validators(["no-such-plugin"])
