"""Start the process a benchmark measures (the runner, or the baseline server) and stop it.

Both are real subprocesses listening on a Unix socket in a private temporary directory, so the
benchmark can read their CPU time and memory from /proc and nothing else shares their socket.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Optional

from .bench_workloads import CALL_ID, NOOP_PLUGIN_REF

START_TIMEOUT = 20.0

CommandFactory = Callable[[str], list[str]]
"""Socket path -> the command line that serves on it."""


def runner_command(socket_path: str, *, workers: Optional[int], use_uvloop: bool,
                   extra: Sequence[str] = ()) -> list[str]:
    """The runner's command line, with the ``bench-noop`` plugin loaded."""
    cmd = [sys.executable, "-m", "apisix_openai_triton.runner.cli", "run",
           "--listen", "unix:" + socket_path, "--plugin", NOOP_PLUGIN_REF]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if not use_uvloop:
        cmd.append("--no-uvloop")
    return cmd + list(extra)


def baseline_command(socket_path: str, *, procs: int, use_uvloop: bool) -> list[str]:
    cmd = [sys.executable, "-m", "apisix_openai_triton.tools.bench_baseline",
           "--listen", socket_path, "--procs", str(procs), "--call-id", str(CALL_ID)]
    return cmd if use_uvloop else cmd + ["--no-uvloop"]


def runner_supports_workers() -> bool:
    """Whether this runner's ``run`` command has ``--workers`` yet (checked once per matrix)."""
    out = subprocess.run(
        [sys.executable, "-m", "apisix_openai_triton.runner.cli", "run", "--help"],
        capture_output=True, text=True, timeout=60,
    )
    return "--workers" in out.stdout


def _connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


class Server:
    """A server subprocess on ``socket_path``: ``with Server(lambda path: cmd) as s: s.pid``."""

    def __init__(self, command: CommandFactory) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="aot-bench-")
        self.socket_path = os.path.join(self._dir.name, "runner.sock")
        self.command = command(self.socket_path)
        self._log: IO[bytes] = open(Path(self._dir.name) / "server.log", "w+b")
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> "Server":
        self._proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not _connectable(self.socket_path):
            if self._proc.poll() is not None:
                raise RuntimeError(f"{' '.join(self.command)} exited with {self._proc.returncode}:"
                                   f"\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{' '.join(self.command)} did not listen within "
                                   f"{START_TIMEOUT:.0f} s:\n{self.log_tail()}")
            time.sleep(0.02)  # polling for the socket with a bounded deadline
        return self

    def log_tail(self, size: int = 2000) -> str:
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(self._log.tell() - size, 0))
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after 5 s; the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()
        self._log.close()
        self._dir.cleanup()

