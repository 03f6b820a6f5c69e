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
import sys
from typing import NoReturn

from . import logs
from .conf_store import ConfStore
from .config import ENV_LISTEN, RunnerConfig
from .registry import PluginLoadError, PluginRegistry
from .server import ListeningSocket, Server, SocketSetupError, bind_unix_socket

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
    listening: ListeningSocket, store: ConfStore, config: RunnerConfig, early: _EarlyStop
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if early.requested:
        stop.set()
    server = Server(store, read_timeout=config.read_timeout, shutdown_grace=config.shutdown_grace)
    log.info("listening on %s with %d plugin(s): %s", listening.path, len(store.registry),
             ", ".join(p.name for p in store.registry))
    await server.serve(listening.sock, stop)


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
    try:
        logs.configure(config.log_level, config.log_file)
    except (OSError, ValueError) as exc:
        print(f"apisix-openai-triton: cannot set up logging: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.set_log_bodies(config.log_bodies)
    if not config.listen:
        log.error("no socket address: set %s=unix:/path or pass --listen", ENV_LISTEN)
        return EXIT_USAGE
    try:
        store = build_store(config)
    except PluginLoadError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    loop = new_event_loop(config.uvloop)
    if early.requested:
        loop.close()
        return EXIT_OK
    try:
        listening = bind_unix_socket(config.listen, config.socket_mode)
    except SocketSetupError as exc:
        log.error("%s", exc)
        loop.close()
        return EXIT_FAILURE
    try:
        loop.run_until_complete(serve_until_signalled(listening, store, config, early))
    except Exception:
        log.exception("the runner stopped on an unexpected error")
        return EXIT_FAILURE
    finally:
        listening.close()
        loop.close()
    log.info("stopped")
    if fast_exit:
        exit_now(EXIT_OK)
    return EXIT_OK
