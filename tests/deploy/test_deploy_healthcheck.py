"""deploy/apisix/healthcheck.py, run as the container runs it, against a real HTTP server on
127.0.0.1 standing in for APISIX's status API and a real Unix socket standing in for the runner."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "apisix" / "healthcheck.py"


class StatusHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        status = 200 if self.path == "/status/ready" else 503
        body = b'{"status": "ok"}' if status == 200 else b'{"status": "error"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


@pytest.fixture()
def status_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def runner_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "apisix-4242.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(8)
        yield path


def healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--timeout", "2", *args],
                          capture_output=True, text=True, timeout=30)


def test_healthy_when_status_is_ready_and_the_runner_accepts(
        status_server: str, runner_socket: Path) -> None:
    result = healthcheck("--url", f"{status_server}/status/ready",
                         "--socket-glob", str(runner_socket.parent / "apisix-*.sock"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_unhealthy_when_workers_are_not_ready(status_server: str, runner_socket: Path) -> None:
    result = healthcheck("--url", f"{status_server}/status/not-ready",
                         "--socket-glob", str(runner_socket))
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr


def test_unhealthy_when_the_runner_has_no_socket(status_server: str, tmp_path: Path) -> None:
    result = healthcheck("--url", f"{status_server}/status/ready",
                         "--socket-glob", str(tmp_path / "apisix-*.sock"))
    assert result.returncode == 1
    assert "no runner socket" in result.stderr


def test_unhealthy_when_the_socket_file_is_left_but_nobody_listens(
        status_server: str, tmp_path: Path) -> None:
    stale = tmp_path / "apisix-1.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(stale))
    result = healthcheck("--url", f"{status_server}/status/ready", "--socket-glob", str(stale))
    assert result.returncode == 1
    assert "not accepting" in result.stderr and "refused" in result.stderr.lower()


def test_a_live_socket_beside_a_stale_one_is_healthy(
        status_server: str, runner_socket: Path) -> None:
    stale = runner_socket.parent / "apisix-1.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(stale))
    result = healthcheck("--url", f"{status_server}/status/ready",
                         "--socket-glob", str(runner_socket.parent / "apisix-*.sock"))
    assert result.returncode == 0, result.stderr


def test_unhealthy_when_apisix_does_not_answer(runner_socket: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = healthcheck("--url", f"http://127.0.0.1:{port}/status/ready",
                         "--socket-glob", str(runner_socket))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
