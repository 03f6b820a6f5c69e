"""``routes apply|diff|delete`` (and the dry-run script and deploy/routes/apply.sh) against a
local HTTP server that answers like the APISIX Admin API and records what it was sent."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
from aiohttp import web

from apisix_openai_triton.runner.plugin import ConfError
from apisix_openai_triton.tools import routes_cli
from apisix_openai_triton.tools.admin import AdminClient, AdminRefused
from apisix_openai_triton.tools.cli import main
from apisix_openai_triton.tools.routes import load_route_file, route_json

KEY = "s3cret-admin-key-7f1c"
ROOT = Path(__file__).resolve().parents[2]

ROUTE_FILE = """\
defaults:
  upstream: {nodes: [triton:8000]}
  openai-to-triton: {model: demo, backend: vllm}
  plugins:
    key-auth: {}
routes:
  - id: chat
    uri: /v1/chat/completions
  - id: models
    uri: /v1/models
"""


@dataclass
class Recorded:
    method: str
    path: str
    key: Optional[str]
    body: Any


@dataclass
class FakeAdmin:
    """Routes by id, stored as APISIX 3 does: with id, timestamps and schema defaults added."""

    key: str = KEY
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        route_id = request.match_info["id"]
        self.requests.append(Recorded(request.method, request.path,
                                      request.headers.get("X-API-KEY"),
                                      json.loads(raw) if raw else None))
        if request.headers.get("X-API-KEY") != self.key:
            return web.json_response({"message": "failed to check token"}, status=401)
        key = f"/apisix/routes/{route_id}"
        if request.method == "PUT":
            if route_id in self.refuse:
                return web.json_response({"error_msg": self.refuse[route_id]}, status=400)
            created = route_id not in self.routes
            now = int(time.time())
            value = json.loads(raw)
            value.update(id=route_id, update_time=now,
                         create_time=self.routes.get(route_id, {}).get("create_time", now))
            value.setdefault("priority", 0)
            value.setdefault("status", 1)
            if "upstream" in value:
                value["upstream"].setdefault("hash_on", "vars")
                value["upstream"].setdefault("pass_host", "pass")
            if "key-auth" in value.get("plugins", {}):
                value["plugins"]["key-auth"].setdefault("hide_credentials", False)
            self.routes[route_id] = value
            return web.json_response({"key": key, "value": value}, status=201 if created else 200)
        if route_id not in self.routes:
            return web.json_response({"message": "Key not found"}, status=404)
        if request.method == "GET":
            return web.json_response({"key": key, "value": self.routes[route_id],
                                      "createdIndex": 7, "modifiedIndex": 9})
        del self.routes[route_id]
        return web.json_response({"deleted": "1", "key": key})


@pytest.fixture
async def admin() -> AsyncIterator[FakeAdmin]:
    fake = FakeAdmin()
    app = web.Application()
    app.router.add_route("*", "/apisix/admin/routes/{id}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
def route_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTE_FILE)
    return path


@pytest.fixture(autouse=True)
def stand_in_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI checks confs with the plugin classes; stand-ins that refuse `tempalte`."""

    def request_conf(raw: str) -> object:
        if "tempalte" in json.loads(raw):
            raise ConfError("unknown field `tempalte`")
        return raw

    monkeypatch.setattr(routes_cli, "plugin_validators",
                        lambda: {"openai-to-triton": request_conf, "triton-to-openai": str})
    monkeypatch.delenv("APISIX_ADMIN_KEY", raising=False)
    monkeypatch.delenv("APISIX_ADMIN_URL", raising=False)


async def cli(*args: str) -> int:
    return await asyncio.to_thread(main, ["routes", *args])


async def test_apply_puts_every_route_then_replaces_them(
        admin: FakeAdmin, route_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("apply", str(route_file), "--admin-url", admin.url, "--admin-key", KEY) == 0
    out = capsys.readouterr().out
    assert "created route chat (201)" in out and "created route models (201)" in out
    expected = {r.id: r.body for r in load_route_file(str(route_file))}
    assert [(r.method, r.path, r.key) for r in admin.requests] == [
        ("PUT", "/apisix/admin/routes/chat", KEY), ("PUT", "/apisix/admin/routes/models", KEY)]
    assert {r.path.rsplit("/", 1)[1]: r.body for r in admin.requests} == expected
    pre = admin.requests[0].body["plugins"]["ext-plugin-pre-req"]["conf"][0]
    assert pre == {"name": "openai-to-triton", "value": '{"model":"demo","backend":"vllm"}'}

    # idempotent: the same ids and bodies again, answered 200
    assert await cli("apply", str(route_file), "--admin-url", admin.url, "--admin-key", KEY) == 0
    assert "updated route chat (200)" in capsys.readouterr().out
    assert [r.body for r in admin.requests[2:]] == [r.body for r in admin.requests[:2]]
    assert sorted(admin.routes) == ["chat", "models"]


async def test_key_comes_from_the_environment(
        admin: FakeAdmin, route_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APISIX_ADMIN_KEY", KEY)
    monkeypatch.setenv("APISIX_ADMIN_URL", admin.url + "/apisix/admin/")
    assert await cli("apply", str(route_file)) == 0
    assert {r.key for r in admin.requests} == {KEY}


async def test_wrong_key_is_a_clear_401_without_echoing_the_key(
        admin: FakeAdmin, route_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = await cli("apply", str(route_file), "--admin-url", admin.url, "--admin-key", "wrong-k3y")
    assert code == 4
    err = capsys.readouterr().err
    assert "401 Unauthorized" in err and "APISIX_ADMIN_KEY" in err
    assert "failed to check token" in err
    assert "wrong-k3y" not in err
    assert len(admin.requests) == 1  # stopped at the first refusal

    assert await cli("apply", str(route_file), "--admin-url", admin.url) == 4
    assert "no key was given" in capsys.readouterr().err


async def test_400_shows_the_admin_api_message_and_what_was_applied(
        admin: FakeAdmin, route_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin.refuse["models"] = 'unknown plugin [ext-plugin-pre-req]'
    code = await cli("apply", str(route_file), "--admin-url", admin.url, "--admin-key", KEY)
    assert code == 5
    err = capsys.readouterr().err
    assert "(400): unknown plugin [ext-plugin-pre-req]" in err
    assert "applied before the failure: chat" in err


async def test_invalid_file_sends_nothing(
        admin: FakeAdmin, route_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route_file.write_text(ROUTE_FILE + "    openai-to-triton: {tempalte: llama3}\n")
    code = await cli("apply", str(route_file), "--admin-url", admin.url, "--admin-key", KEY)
    assert code == 2
    err = capsys.readouterr().err
    assert f"{route_file}:11: route 'models': key 'openai-to-triton.tempalte'" in err
    assert "unknown field `tempalte`" in err
    assert admin.requests == []


async def test_unreachable_gateway_is_clear_and_non_zero(
        route_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = await cli("apply", str(route_file), "--admin-url", f"http://127.0.0.1:{port}",
                     "--admin-key", KEY)
    assert code == 3
    err = capsys.readouterr().err
    assert (f"cannot reach the APISIX Admin API at http://127.0.0.1:{port}: "
            "connection refused") in err


async def test_silent_gateway_times_out_clearly(
        route_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = asyncio.Event()

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code = await cli("diff", str(route_file), "--admin-url", f"http://127.0.0.1:{port}",
                         "--admin-key", KEY, "--timeout", "0.3")
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert code == 3
    assert "no answer within 0.3 s" in capsys.readouterr().err


async def test_diff_ignores_what_the_gateway_adds_and_shows_real_changes(
        admin: FakeAdmin, route_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--admin-url", admin.url, "--admin-key", KEY)
    assert await cli("diff", str(route_file), *args) == 1
    out = capsys.readouterr().out
    assert "--- gateway: routes/chat (absent)" in out and "2 of 2 route(s) would change" in out

    assert await cli("apply", str(route_file), *args) == 0
    capsys.readouterr()
    assert await cli("diff", str(route_file), *args) == 0
    out = capsys.readouterr().out
    assert "route chat: up to date" in out and "0 of 2 route(s) would change" in out

    # someone changed the gateway by hand; the file changed too
    admin.routes["chat"]["plugins"]["limit-count"] = {"count": 5, "time_window": 1}
    admin.routes["chat"]["priority"] = 3
    route_file.write_text(ROUTE_FILE.replace("model: demo", "model: llama"))
    assert await cli("diff", str(route_file), *args) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "--- gateway: routes/chat" in lines and f"+++ {route_file}: routes/chat" in lines
    assert '-            "model": "demo"' in lines and '+            "model": "llama"' in lines
    assert '-    "limit-count": {' in lines  # apply would remove it
    assert '-  "priority": 3,' in lines
    assert "hash_on" not in out and "create_time" not in out and "hide_credentials" not in out
    assert "2 of 2 route(s) would change" in out
    assert [r.method for r in admin.requests[-2:]] == ["GET", "GET"]


async def test_delete_removes_the_routes_and_absent_ones_are_fine(
        admin: FakeAdmin, route_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--admin-url", admin.url, "--admin-key", KEY)
    assert await cli("apply", str(route_file), *args) == 0
    assert await cli("delete", str(route_file), *args) == 0
    assert admin.routes == {}
    assert "deleted route chat" in capsys.readouterr().out
    assert await cli("delete", str(route_file), *args) == 0
    assert "route models: already absent" in capsys.readouterr().out
    assert [r.method for r in admin.requests[-4:]] == ["DELETE"] * 4


async def test_proxy_port_404_is_not_mistaken_for_an_absent_route(admin: FakeAdmin) -> None:
    app = web.Application()

    async def proxy(request: web.Request) -> web.Response:
        return web.json_response({"error_msg": "404 Route Not Found"}, status=404)

    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        client = AdminClient(f"http://{host}:{port}", KEY)
        with pytest.raises(AdminRefused, match="not the gateway's proxy port"):
            await asyncio.to_thread(client.get_route, "chat")
    finally:
        await runner.cleanup()


async def test_dry_run_prints_json_and_curl_never_the_key(
        admin: FakeAdmin, route_file: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APISIX_ADMIN_KEY", KEY)
    code = await cli("apply", str(route_file), "--dry-run", "--admin-url", admin.url,
                     "--admin-key", KEY)
    assert code == 0
    out = capsys.readouterr().out
    assert KEY not in out
    assert f"curl -sS -X PUT {admin.url}/apisix/admin/routes/chat" in out
    assert '-H "X-API-KEY: $APISIX_ADMIN_KEY"' in out
    for route in load_route_file(str(route_file)):
        assert route_json(route) in out
    assert admin.requests == []  # a dry run sends nothing

    # ... and the printed script really does what apply does.
    if shutil.which("curl") is None or shutil.which("sh") is None:
        pytest.skip("curl or sh missing")
    env = {**os.environ, "APISIX_ADMIN_KEY": KEY, "NO_PROXY": "*", "no_proxy": "*"}
    proc = await asyncio.create_subprocess_exec(
        "sh", "-e", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    _, stderr = await asyncio.wait_for(proc.communicate(out.encode()), 30)
    assert proc.returncode == 0, stderr
    assert [(r.method, r.path, r.key) for r in admin.requests] == [
        ("PUT", "/apisix/admin/routes/chat", KEY), ("PUT", "/apisix/admin/routes/models", KEY)]
    expected = {r.id: r.body for r in load_route_file(str(route_file))}
    assert {r.path.rsplit("/", 1)[1]: r.body for r in admin.requests} == expected


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing")
async def test_shipped_curl_script_puts_the_committed_json(admin: FakeAdmin) -> None:
    script = ROOT / "deploy" / "routes" / "apply.sh"
    env = {**os.environ, "APISIX_ADMIN_URL": admin.url, "APISIX_ADMIN_KEY": KEY,
           "NO_PROXY": "*", "no_proxy": "*"}
    proc = await asyncio.create_subprocess_exec(
        "sh", str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr
    committed = {p.stem: json.loads(p.read_text()) for p in script.parent.glob("*.json")}
    assert {r.path.rsplit("/", 1)[1]: r.body for r in admin.requests} == committed
    assert {r.key for r in admin.requests} == {KEY}
    assert stdout.decode().count("created route") == len(committed)

    env["APISIX_ADMIN_KEY"] = "wr0ng-k3y"
    proc = await asyncio.create_subprocess_exec(
        "sh", str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 5
    assert b"answered 401" in stderr and b"wr0ng-k3y" not in stderr
