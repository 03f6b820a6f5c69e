"""The Unix-socket server: bind the socket safely, serve connections, stop fast.

Binding and serving are separate so that a worker layer can bind once in a parent process,
fork, and call ``serve(sock, store, stop=...)`` in each child on the same listening socket.

Shutdown (SIGTERM from the gateway, then SIGKILL one second later): stop accepting, close idle
connections, let calls in flight finish for at most ``shutdown_grace`` seconds, abort the rest.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import Any, Optional, Union

from .conf_store import ConfStore
from .connection import Connection
from .metrics import Metrics

log = logging.getLogger("apisix_openai_triton.runner.server")

DEFAULT_SOCKET_MODE = 0o766
"""Compatible with the other runners: the gateway's workers (often ``nobody``) must connect."""
LISTEN_BACKLOG = 1024


class SocketSetupError(Exception):
    """The listening socket cannot be created at the requested path; the message says why."""


def _check_path(path: str) -> None:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise SocketSetupError(f"cannot listen on {path}: directory {directory} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise SocketSetupError(f"refusing to listen on {path}: it is a symbolic link (not removed)")
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketSetupError(f"refusing to listen on {path}: a file that is not a socket is there (not removed)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # a stale socket left by a runner that died: nobody is listening
        log.info("removed stale socket file %s", path)
    else:
        raise SocketSetupError(f"cannot listen on {path}: another process is accepting connections there")
    finally:
        probe.close()


class ListeningSocket:
    """A bound, listening Unix socket and the file it created (removed by ``close``)."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path
        st = os.lstat(path)
        self._identity = (st.st_dev, st.st_ino)

    def close(self) -> None:
        """Close the socket and unlink its file, unless a successor already replaced it."""
        self.sock.close()
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot remove socket file %s: %s", self.path, exc.strerror)


def bind_unix_socket(path: str, mode: int = DEFAULT_SOCKET_MODE) -> ListeningSocket:
    """A listening, non-blocking Unix socket at ``path`` with permissions ``mode``.

    A stale socket file is replaced; a symlink, a regular file, a live socket or a missing
    directory is refused with ``SocketSetupError`` and left alone.
    """
    _check_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise SocketSetupError(f"cannot bind {path}: {exc.strerror or exc}") from exc
    try:
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        os.unlink(path)
        raise SocketSetupError(f"cannot set mode {mode:#o} on {path}: {exc.strerror or exc}") from exc
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return ListeningSocket(sock, path)


class OneAtATime:
    """Accepts one connection per readiness event on a socket shared by worker processes.

    asyncio's server accepts up to its backlog in one go, so with keep-alive connections
    arriving in a burst (the gateway filling its pool) the first worker to wake takes nearly
    all of them and keeps them. Taking one at a time lets every woken worker race for each
    connection, and a busy worker wakes later: connections spread over the workers.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[], asyncio.Protocol]) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._pending: set[asyncio.Future[Any]] = set()
        self._closed = False
        loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:  # out of descriptors or memory: back off, as asyncio does
            log.warning("cannot accept a connection (%s): pausing accepts for 1 s", exc.strerror or exc)
            self._loop.remove_reader(self._sock.fileno())
            self._loop.call_later(1.0, self._resume)
            return
        conn.setblocking(False)
        future = asyncio.ensure_future(self._loop.connect_accepted_socket(self._factory, conn))
        self._pending.add(future)
        future.add_done_callback(self._connected)

    def _connected(self, future: "asyncio.Future[Any]") -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("cannot set up an accepted connection: %s", future.exception())

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._ready)

    def close(self) -> None:
        """Stop accepting in this process (the socket stays open for the others)."""
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())


class Server:
    """Accepts gateway connections on one listening socket and tracks them for shutdown."""

    def __init__(
        self,
        store: ConfStore,
        *,
        read_timeout: float = 60.0,
        shutdown_grace: float = 0.8,
        sweep_interval: Optional[float] = None,
        metrics: Optional[Metrics] = None,
    ) -> None:
        self.store = store
        #: this process's counters, or ``None`` when metrics are off
        self.metrics = metrics
        self.read_timeout = read_timeout
        self.shutdown_grace = shutdown_grace
        self.sweep_interval = sweep_interval or min(60.0, max(store.ttl / 10, 0.05))
        self.draining = False
        self.connections: set[Connection] = set()
        self._all_closed: Optional[asyncio.Event] = None

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def _accept(self) -> Connection:
        conn = Connection(self)
        self.connections.add(conn)
        return conn

    async def serve(self, sock: socket.socket, stop: asyncio.Event, *, shared: bool = False) -> None:
        """Serve on the already listening ``sock`` until ``stop`` is set, then drain.

        ``shared``: other worker processes accept on ``sock`` too (see ``OneAtATime``).
        """
        loop = asyncio.get_running_loop()
        listener: Union[asyncio.AbstractServer, OneAtATime]
        if shared:
            listener = OneAtATime(loop, sock, self._accept)
        else:
            listener = await loop.create_unix_server(self._accept, sock=sock, backlog=LISTEN_BACKLOG)
        housekeeping = [
            loop.create_task(self._reap_stalled()),
            loop.create_task(self._sweep_confs()),
        ]
        try:
            await stop.wait()
        finally:
            listener.close()
            for task in housekeeping:
                task.cancel()
            await self._drain()

    async def _drain(self) -> None:
        self.draining = True
        self._all_closed = asyncio.Event()
        for conn in list(self.connections):
            if not conn.in_call:
                conn.close()
        tasks = [c.task for c in self.connections if c.task is not None]
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), self.shutdown_grace)
            except asyncio.TimeoutError:
                log.warning("%d call(s) still running at shutdown: dropped", len(self.connections))
                for conn in list(self.connections):
                    conn.abort()
        # Let the connection tasks observe their cancellation before the loop goes away.
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=0.1)

    async def _reap_stalled(self) -> None:
        interval = min(1.0, self.read_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            for conn in list(self.connections):
                conn.tick(interval, self.read_timeout)

    async def _sweep_confs(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            dropped = self.store.sweep()
            if dropped:
                log.info("dropped %d conf(s) unused for %.0f s", dropped, self.store.ttl)


async def serve(
    sock: socket.socket,
    store: ConfStore,
    *,
    stop: asyncio.Event,
    read_timeout: float = 60.0,
    shutdown_grace: float = 0.8,
) -> None:
    """Serve gateway connections on a bound, listening Unix socket until ``stop`` is set."""
    server = Server(store, read_timeout=read_timeout, shutdown_grace=shutdown_grace)
    await server.serve(sock, stop)
