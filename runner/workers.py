"""``run --workers N``: one parent, N forked workers accepting on the same socket.

The parent binds the gateway socket (and the metrics socket) and loads the plugins before it
forks, so every worker inherits them (and the plugins' module state, such as the state signing
key), then only supervises: a worker that dies is replaced (with a log line, a restart counter
and a backoff when it keeps dying young); SIGTERM/SIGINT is forwarded to the workers, which
drain for up to ``shutdown_grace``; stragglers get SIGKILL 0.9 s after the signal; then the
socket file and the private directory are removed and the parent exits 0.

Tokens: one random start per runner instance, worker ``i`` of ``n`` mints ``start + i + k*n``.
A replacement worker continues after the last token its predecessors at index ``i`` recorded
in the shared conf log (conf_share.py), so no token is ever handed out twice.

Workers exit when the parent dies: ``PR_SET_PDEATHSIG`` on Linux, and a ``getppid`` check once
a second everywhere.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Callable, NoReturn, Optional

from . import metrics as mx
from .conf_share import SharedConfLog
from .conf_store import ConfStore, TokenMinter
from .server import ListeningSocket

log = logging.getLogger("apisix_openai_triton.runner")

STOP_DEADLINE = 0.9
"""Seconds after SIGTERM when the parent SIGKILLs workers still running (the gateway SIGKILLs
the parent at 1 s)."""
YOUNG = 5.0
"""A worker that dies younger than this counts towards the crash-loop backoff."""
MAX_BACKOFF = 5.0
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1
_UINT32 = 1 << 32

WorkerMain = Callable[["WorkerContext"], int]
"""Runs one worker's event loop until it is told to stop; returns its exit code."""


@dataclass
class WorkerContext:
    """What a freshly forked worker needs to set itself up."""

    index: int
    count: int
    token_start: int
    store: ConfStore
    directory: str
    parent_pid: int
    metrics: Optional[mx.Metrics] = None
    conf_log: Optional[SharedConfLog] = field(default=None, repr=False)
    #: SIGTERM/SIGINT arrived before the worker's event loop took over the signals
    stop_requested: bool = False

    def note_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def prepare(self) -> None:
        """Hook the conf store to the shared log and pick up where a predecessor stopped."""
        conf_log = SharedConfLog(self.directory, index=self.index, ttl=self.store.ttl)
        conf_log.read_new()
        last = conf_log.last_token.get(self.index)
        start = self.token_start if last is None else (last + self.count - self.index) % _UINT32
        self.store.minter = TokenMinter(start, self.index, self.count)
        self.store.on_prepare = conf_log.append
        self.store.on_miss = conf_log.lookup
        self.conf_log = conf_log
        if self.metrics is not None:
            self.metrics.worker = str(self.index)
            for snap in mx.read_snapshots(self.directory):
                if snap.get("worker") == str(self.index):
                    self.metrics.merge(snap)  # counters continue across a restart

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent_pid


def set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (elsewhere: a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        # CDLL(None) is the process's own symbols, libc included: no ldconfig run at start-up.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def resolve_workers(value: object) -> int:
    """``auto`` -> the CPU count; otherwise a positive integer (at most 256)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a number of workers or \"auto\", got {value!r}")
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"expected a number of workers or \"auto\", got {value!r}") from None
    if not 1 <= count <= 256:
        raise ValueError(f"the number of workers must be between 1 and 256, got {count}")
    return count


@dataclass
class _Slot:
    index: int
    pid: int = 0
    started: float = 0.0
    young_deaths: int = 0
    restart_at: Optional[float] = None


class Supervisor:
    """Forks the workers, replaces the ones that die, stops them all on SIGTERM/SIGINT."""

    def __init__(self, count: int, store: ConfStore, listening: ListeningSocket,
                 worker_main: WorkerMain, *, metrics_sock: Optional[socket.socket] = None,
                 metrics_enabled: bool = False) -> None:
        self.count = count
        self.store = store
        self.listening = listening
        self.worker_main = worker_main
        self.metrics_sock = metrics_sock
        self.metrics_enabled = metrics_enabled
        self.token_start = TokenMinter.random_start()
        self.directory = tempfile.mkdtemp(prefix="apisix-openai-triton-")  # mode 0700
        self.restarts = 0
        self.parent_pid = os.getpid()
        self._slots = [_Slot(i) for i in range(count)]
        self._old_mask: set[int | signal.Signals] = set()

    # --- the parent ----------------------------------------------------------------------------

    def run(self, stop_requested: Callable[[], bool]) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit code (0 after a clean stop)."""
        self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self._write_restarts()
            for slot in self._slots:
                if stop_requested():
                    break
                self._spawn(slot)
            log.info("listening on %s with %d workers", self.listening.path, self.count)
            while not stop_requested():
                info = signal.sigtimedwait(_SIGNALS, self._wait_time())
                if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    break
                self._reap()
                self._restart_due()
            self._stop_all()
            return 0
        finally:
            self.listening.close()
            if self.metrics_sock is not None:
                self.metrics_sock.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)

    def _wait_time(self) -> float:
        due = [s.restart_at for s in self._slots if s.restart_at is not None]
        if not due:
            return 1.0
        return max(0.0, min(due) - time.monotonic())

    def _exited(self) -> Iterator[tuple[_Slot, int]]:
        """Workers that have exited since the last look, with their wait status; never blocks."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self._slots:
                if slot.pid == pid:
                    yield slot, status

    def _reap(self) -> None:
        for slot, status in self._exited():
            self._died(slot, status)

    def _died(self, slot: _Slot, status: int) -> None:
        lived = time.monotonic() - slot.started
        slot.pid = 0
        slot.young_deaths = slot.young_deaths + 1 if lived < YOUNG else 0
        delay = 0.0 if slot.young_deaths <= 1 else min(0.1 * 2 ** (slot.young_deaths - 2), MAX_BACKOFF)
        slot.restart_at = time.monotonic() + delay
        self.restarts += 1
        self._write_restarts()
        log.warning("worker %d %s after %.1f s; starting a replacement in %.1f s (restart #%d)",
                    slot.index, _describe(status), lived, delay, self.restarts)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                self._spawn(slot)

    def _write_restarts(self) -> None:
        if not self.metrics_enabled:
            return
        snap = mx.Metrics("supervisor")
        snap.restarts = self.restarts
        try:
            mx.write_snapshot(self.directory, snap)
        except OSError as exc:
            log.warning("cannot write the supervisor's metrics: %s", exc)

    def _stop_all(self) -> None:
        deadline = time.monotonic() + STOP_DEADLINE
        for slot in self._slots:
            slot.restart_at = None
            if slot.pid:
                _signal(slot.pid, signal.SIGTERM)
        while any(s.pid for s in self._slots):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            signal.sigtimedwait({signal.SIGCHLD}, remaining)
            self._reap_quietly()
        for slot in self._slots:
            if slot.pid:
                log.warning("worker %d did not stop in %.1f s: killing it", slot.index, STOP_DEADLINE)
                _signal(slot.pid, signal.SIGKILL)
                try:
                    os.waitpid(slot.pid, 0)
                except ChildProcessError:
                    pass
                slot.pid = 0

    def _reap_quietly(self) -> None:
        """While stopping: a worker that exits is gone for good, not restarted."""
        for slot, _ in self._exited():
            slot.pid = 0

    def _spawn(self, slot: _Slot) -> None:
        pid = os.fork()
        if pid == 0:
            self._child(slot.index)
        slot.pid = pid
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, pid)

    # --- the child -----------------------------------------------------------------------------

    def _child(self, index: int) -> NoReturn:
        code = 1
        try:
            set_parent_death_signal()
            context = WorkerContext(
                index, self.count, self.token_start, self.store, self.directory, self.parent_pid,
                mx.Metrics(str(index)) if self.metrics_enabled else None,
            )
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, context.note_stop)
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
            if not context.parent_alive():
                os._exit(0)
            context.prepare()
            code = self.worker_main(context)
        except BaseException:  # never return into the parent's code in a child
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(code)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
