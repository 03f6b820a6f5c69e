"""The plugin runner as a child process of ``dev`` and ``demo``, the way APISIX starts it.

The gateway starts ``apisix-openai-triton run`` with ``APISIX_LISTEN_ADDRESS`` set; here the
socket lives in a fresh private directory that is removed with the child. The child gets its own
session so a Ctrl-C in the terminal reaches only the parent, which then stops the gateway first
and the runner last: no request is cut off by a runner that stopped before its gateway. On
Linux the child is also told to stop when its parent dies, however it dies (even SIGKILL), so
a killed ``demo`` never leaves a runner behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from apisix_openai_triton.runner.testkit import runner_command, wait_for_socket

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1


class RunnerStartError(RuntimeError):
    """The runner exited or never listened."""


@dataclass
class SpawnedRunner:
    socket_path: str
    proc: "subprocess.Popen[bytes]"


def _stop_with_parent(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux ``prctl``). The signal
    follows the thread that forked, which is the event loop's thread here."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def spawn_runner() -> AsyncIterator[SpawnedRunner]:
    """Start the runner on a private socket, wait until it accepts, stop it on exit.

    Its output goes to this process's stderr (the runner logs warnings and errors only, and
    never bodies unless told to).
    """
    directory = tempfile.mkdtemp(prefix="a6-dev-")
    path = os.path.join(directory, "runner.sock")
    try:
        parent = os.getpid()
        proc = subprocess.Popen(
            [*runner_command(), "--listen", path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=(lambda: _stop_with_parent(parent)) if sys.platform == "linux" else None,
        )
        try:
            try:
                await asyncio.to_thread(wait_for_socket, path, START_TIMEOUT, proc)
            except (RuntimeError, TimeoutError) as exc:
                raise RunnerStartError(str(exc)) from None
            yield SpawnedRunner(path, proc)
        finally:
            await asyncio.to_thread(_stop, proc)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
