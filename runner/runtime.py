"""``run``: from a ``RunnerConfig`` to a serving process, and back to an exit code.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for a configuration problem (bad log
settings, a plugin spec that does not load, no socket address), 1 for a runtime failure (the
socket cannot be bound). Each failure is one clear log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn, Optional

from . import logs
from . import metrics as mx
from .conf_store import ConfStore
from .fdlimit import ensure_fd_limit
from .config import ENV_LISTEN, RunnerConfig
from .metrics_http import MetricsService, bind_metrics
from .registry import PluginLoadError, PluginRegistry
from .server import ListeningSocket, Server, SocketSetupError, bind_unix_socket
from .workers import Supervisor, WorkerContext, set_parent_death_signal

log = logging.getLogger("apisix_openai_triton.runner")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def new_event_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed and wanted, else asyncio's."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.debug("uvloop is not installed: using the asyncio event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def build_store(config: RunnerConfig) -> ConfStore:
    """The plugin registry and an empty conf store; raises ``PluginLoadError``."""
    registry = PluginRegistry.discover(config.plugins)
    return ConfStore(registry, expire_time=config.conf_expire_time)


class _EarlyStop:
    """Records SIGTERM/SIGINT that arrive before the event loop handles them (while plugins
    import, say), so a runner told to stop during startup still exits 0 and cleans up."""

    def __init__(self) -> None:
        self.requested = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.requested = True


async def serve_until_signalled(
    sock: socket.socket,
    store: ConfStore,
    config: RunnerConfig,
    stop_requested: Callable[[], bool],
    *,
    metrics: Optional[mx.Metrics] = None,
    metrics_sock: Optional[socket.socket] = None,
    worker: Optional[WorkerContext] = None,
) -> None:
    """Serve on ``sock`` until SIGTERM/SIGINT (or, in a worker, until the parent is gone).

    ``stop_requested`` is asked only after the loop's own handlers are installed: a signal that
    arrived before then was caught by the early handler, and must not be lost in between.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if stop_requested():
        stop.set()
    mx.activate(metrics)
    server = Server(store, read_timeout=config.read_timeout, shutdown_grace=config.shutdown_grace,
                    metrics=metrics)
    side: list[asyncio.Task[None]] = []
    if metrics is not None:
        service = MetricsService(metrics, store, sock=metrics_sock,
                                 directory=worker.directory if worker is not None else None)
        side.append(loop.create_task(service.run(stop)))
    if worker is not None:
        side.append(loop.create_task(_watch_parent(worker, stop)))
    try:
        await server.serve(sock, stop, shared=worker is not None)
    finally:
        stop.set()
        if side:
            await asyncio.wait(side, timeout=0.2)
        for task in side:
            task.cancel()


async def _watch_parent(worker: WorkerContext, stop: asyncio.Event) -> None:
    """Stop this worker when its parent is gone (where PR_SET_PDEATHSIG is not available)."""
    while not stop.is_set():
        if not worker.parent_alive():
            log.warning("worker %d: the runner's parent process is gone; stopping", worker.index)
            stop.set()
            return
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


def exit_now(code: int) -> NoReturn:
    """Flush logs and streams, then leave without interpreter teardown.

    Tearing down the interpreter with the plugins' libraries loaded (tokenizers, Jinja2) takes
    a few hundred milliseconds, and the gateway sends SIGKILL one second after SIGTERM.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def run(config: RunnerConfig, *, fast_exit: bool = False) -> int:
    """Configure logging, load plugins, bind, serve until SIGTERM/SIGINT; returns an exit code.

    With ``fast_exit`` the process ends right after serving (see ``exit_now``): for the CLI only.
    """
    early = _EarlyStop()
    # The gateway restarts a runner that exits, but a runner whose gateway died (SIGKILL, OOM)
    # would keep serving a socket nobody uses: ask for SIGTERM when the parent goes away.
    set_parent_death_signal()
    try:
        logs.configure(config.log_level, config.log_file)
    except (OSError, ValueError) as exc:
        print(f"apisix-openai-triton: cannot set up logging: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.set_log_bodies(config.log_bodies)
    ensure_fd_limit()
    if not config.listen:
        log.error("no socket address: set %s=unix:/path or pass --listen", ENV_LISTEN)
        return EXIT_USAGE
    try:
        store = build_store(config)
    except PluginLoadError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    if early.requested:
        return EXIT_OK
    try:
        listening = bind_unix_socket(config.listen, config.socket_mode)
    except SocketSetupError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    metrics_sock: Optional[socket.socket] = None
    if config.metrics_listen:
        try:
            metrics_sock = bind_metrics(config.metrics_listen)
        except (OSError, ValueError) as exc:
            log.error("cannot listen for metrics on %s: %s", config.metrics_listen, exc)
            listening.close()
            return EXIT_FAILURE
    if config.workers > 1:
        return _run_workers(config, store, listening, metrics_sock, early, fast_exit)
    loop = new_event_loop(config.uvloop)
    log.info("listening on %s with %d plugin(s): %s", listening.path, len(store.registry),
             ", ".join(p.name for p in store.registry))
    try:
        loop.run_until_complete(serve_until_signalled(
            listening.sock, store, config, lambda: early.requested,
            metrics=mx.Metrics() if metrics_sock is not None else None, metrics_sock=metrics_sock,
        ))
    except Exception:
        log.exception("the runner stopped on an unexpected error")
        return EXIT_FAILURE
    finally:
        listening.close()
        if metrics_sock is not None:
            metrics_sock.close()
        loop.close()
    log.info("stopped")
    if fast_exit:
        exit_now(EXIT_OK)
    return EXIT_OK


def _run_workers(config: RunnerConfig, store: ConfStore, listening: ListeningSocket,
                 metrics_sock: Optional[socket.socket], early: _EarlyStop, fast_exit: bool) -> int:
    def worker_main(context: WorkerContext) -> int:
        loop = new_event_loop(config.uvloop)
        try:
            loop.run_until_complete(serve_until_signalled(
                listening.sock, context.store, config, lambda: context.stop_requested,
                metrics=context.metrics, metrics_sock=metrics_sock, worker=context,
            ))
        finally:
            loop.close()
        return EXIT_OK

    supervisor = Supervisor(config.workers, store, listening, worker_main,
                            metrics_sock=metrics_sock, metrics_enabled=metrics_sock is not None)
    log.info("starting %d workers with %d plugin(s): %s", config.workers, len(store.registry),
             ", ".join(p.name for p in store.registry))
    try:
        code = supervisor.run(lambda: early.requested)
    except Exception:
        log.exception("the runner's supervisor stopped on an unexpected error")
        return EXIT_FAILURE
    log.info("stopped")
    if fast_exit:
        exit_now(code)
    return code
