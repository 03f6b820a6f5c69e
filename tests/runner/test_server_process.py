"""The runner as the gateway runs it: a subprocess on a socket, signals, exit codes, the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apisix_openai_triton.runner.server import SocketSetupError, bind_unix_socket
from apisix_openai_triton.runner.testkit import (
    GatewayClient, RunnerProcess, runner_command, wait_for_socket,
)

HERE = Path(__file__).resolve().parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APISIX_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apisix_openai_triton.runner.cli", *args],
        cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=60,
    )


async def test_sigterm_exits_0_within_a_second_and_removes_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sock")
    with RunnerProcess(path, "--plugin", "runner_test_plugins:Halt", env=_env(), cwd=str(tmp_path)) as runner:
        async with GatewayClient(path) as gateway:  # an idle keep-alive connection stays open
            outcome = await gateway.request([("halt", {"status": 202})])
            assert outcome.response is not None and outcome.response.status == 202
            assert runner.proc is not None
            started = time.monotonic()
            runner.proc.send_signal(signal.SIGTERM)
            code = runner.proc.wait(5)
            elapsed = time.monotonic() - started
    assert code == 0, runner.output()
    assert elapsed < 1.0
    assert not os.path.exists(path)


async def test_a_restarted_runner_does_not_reuse_tokens(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sock")
    tokens = []
    for _ in range(2):
        with RunnerProcess(path, "--plugin", "runner_test_plugins:Halt", env=_env(), cwd=str(tmp_path)):
            async with GatewayClient(path) as gateway:
                tokens.append({await gateway.prepare([("halt", {"n": n})]) for n in range(20)})
    assert len(tokens[0]) == len(tokens[1]) == 20
    assert not tokens[0] & tokens[1]


def test_env_address_and_socket_mode_are_applied(tmp_path: Path) -> None:
    path = str(tmp_path / "env.sock")
    env = _env(APISIX_LISTEN_ADDRESS=f"unix:{path}")
    proc = subprocess.Popen(runner_command("--socket-mode", "0700"), env=env, cwd=tmp_path,
                            stderr=subprocess.PIPE)
    try:
        from apisix_openai_triton.runner.testkit import wait_for_socket
        wait_for_socket(path, 30, proc)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def test_default_socket_mode_is_0766(tmp_path: Path) -> None:
    listening = bind_unix_socket(str(tmp_path / "m.sock"))
    try:
        assert stat.S_IMODE(os.stat(listening.path).st_mode) == 0o766
        assert stat.S_ISSOCK(os.stat(listening.path).st_mode)
    finally:
        listening.close()
    assert not os.path.exists(tmp_path / "m.sock")


def test_symlink_regular_file_live_socket_and_missing_dir_are_refused(tmp_path: Path) -> None:
    regular = tmp_path / "file.sock"
    regular.write_text("keep me")
    link = tmp_path / "link.sock"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SocketSetupError, match="not a socket"):
        bind_unix_socket(str(regular))
    with pytest.raises(SocketSetupError, match="symbolic link"):
        bind_unix_socket(str(link))
    with pytest.raises(SocketSetupError, match="does not exist"):
        bind_unix_socket(str(tmp_path / "no" / "dir.sock"))
    assert regular.read_text() == "keep me" and link.is_symlink()
    live = bind_unix_socket(str(tmp_path / "live.sock"))
    try:
        with pytest.raises(SocketSetupError, match="another process"):
            bind_unix_socket(live.path)
    finally:
        live.close()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens
    listening = bind_unix_socket(path)
    listening.close()


def test_refused_path_exits_1_with_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "file.sock").write_text("")
    result = _cli("run", "--listen", f"unix:{tmp_path / 'file.sock'}", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a socket" in lines[0] and "ERROR" in lines[0]


def test_plugins_prints_json_on_stdout(tmp_path: Path) -> None:
    result = _cli("plugins", "--plugin", "example_plugin:ApiKeyCheck", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    by_name = {p["name"]: p for p in listed}
    assert by_name["api-key-check"]["conf_schema"]["required"] == ["key"]
    assert by_name["api-key-check"]["phases"] == ["request"]
    assert by_name["api-key-check"]["source"] == "example_plugin:ApiKeyCheck"


def test_run_help_documents_every_env_var(tmp_path: Path) -> None:
    result = _cli("run", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for needle in ("APISIX_LISTEN_ADDRESS", "APISIX_CONF_EXPIRE_TIME", "APISIX_OPENAI_TRITON_CONFIG",
                   "--log-bodies", "--no-uvloop", "--read-timeout", "--socket-mode"):
        assert needle in result.stdout


def test_unknown_config_key_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "runner.yaml"
    config.write_text("log_level: info\n# comment\nsocket_mod: '0700'\n")
    result = _cli("run", "--config", str(config), "--listen", str(tmp_path / "x.sock"), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{config}:3" in result.stderr and "socket_mod" in result.stderr
    assert not (tmp_path / "x.sock").exists()


def test_config_file_in_cwd_is_ignored(tmp_path: Path) -> None:
    """Under APISIX the working directory holds APISIX's conf/config.yaml: never read it."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("plugins: ['no_such_module:Plugin']\n")
    result = _cli("plugins", cwd=tmp_path)
    assert result.returncode == 0 and "no_such_module" not in result.stderr


def test_bad_plugin_spec_exits_2(tmp_path: Path) -> None:
    result = _cli("run", "--listen", str(tmp_path / "x.sock"), "--plugin", "runner_test_plugins:Nope",
                  cwd=tmp_path)
    assert result.returncode == 2 and "has no attribute 'Nope'" in result.stderr


def test_no_address_exits_2(tmp_path: Path) -> None:
    result = _cli("run", cwd=tmp_path)
    assert result.returncode == 2 and "APISIX_LISTEN_ADDRESS" in result.stderr


def test_shipped_config_file_is_valid() -> None:
    from apisix_openai_triton.runner.config import RunnerConfig, load_file, resolve

    root = HERE.parents[1]
    values = load_file(str(root / "conf" / "config.yaml"))
    defaults = RunnerConfig()
    assert {k: getattr(defaults, k) for k in values} == values  # documents the defaults
    assert resolve({}, env={}).socket_mode == 0o766


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_runner_stops_cleanly_when_its_parent_dies(tmp_path: Path) -> None:
    """A gateway killed outright must not leave its runner serving a socket nobody uses."""
    path = str(tmp_path / "r.sock")
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True); p.wait()",
         *runner_command(), "--listen", path],
        env=_env(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert parent.stdout is not None
        runner_pid = int(parent.stdout.readline())
        wait_for_socket(path, 15.0)
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 5.0
        while not _gone_or_zombie(runner_pid) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling the process table with a deadline: there is no event to wait on
        assert _gone_or_zombie(runner_pid)
        assert not os.path.exists(path)  # it stopped cleanly (SIGTERM), removing its socket
    finally:
        parent.kill()
        parent.wait(5)
