"""The ``--metrics-listen`` endpoint and the per-worker snapshot flush.

The TCP socket is bound once (in the parent when there are workers) and every worker accepts
on it, like the gateway socket: whichever worker takes a scrape answers for all of them from
the snapshot files (see metrics.py). The HTTP side is deliberately tiny: ``GET /metrics``
(or ``/``), one request per connection, bounded header size and read time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Optional

from . import metrics as mx
from .conf_store import ConfStore

log = logging.getLogger("apisix_openai_triton.runner.metrics")

MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> ``(host, port)``; raises ``ValueError``."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"expected a port number in {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


def bind_metrics(value: str) -> socket.socket:
    """A listening, non-blocking TCP socket for the metrics endpoint; raises ``OSError``."""
    host, port = parse_host_port(value)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MetricsService:
    """Serves scrapes and, with workers, flushes this worker's snapshot once a second."""

    def __init__(self, live: mx.Metrics, store: ConfStore, *, sock: Optional[socket.socket],
                 directory: Optional[str], interval: float = 1.0) -> None:
        self.live = live
        self.store = store
        self.sock = sock
        self.directory = directory
        self.interval = interval

    def exposition(self) -> bytes:
        self.live.conf_store_size = len(self.store)
        return mx.exposition(self.live, self.directory)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve and flush until ``stop`` is set, then flush a last time."""
        server: Optional[asyncio.AbstractServer] = None
        if self.sock is not None:
            server = await asyncio.start_server(self._handle, sock=self.sock, limit=MAX_REQUEST_HEAD)
        try:
            if self.directory is None:
                await stop.wait()
                return
            written = None
            while not stop.is_set():
                written = self._flush(written)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
            self._flush(None)
        finally:
            if server is not None:
                server.close()

    def _flush(self, previous: Optional[bytes]) -> Optional[bytes]:
        """Write the snapshot if it changed since ``previous``; returns what is on disk now."""
        assert self.directory is not None
        self.live.conf_store_size = len(self.store)
        current = repr(self.live.snapshot()).encode()
        if current == previous:
            return previous
        try:
            mx.write_snapshot(self.directory, self.live)
        except OSError as exc:
            log.warning("cannot write the metrics snapshot: %s", exc)
            return previous
        return current

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            writer.close()
            return
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] in (b"/metrics", b"/"):
            status, body, kind = b"200 OK", self.exposition(), CONTENT_TYPE
        else:
            status, body, kind = b"404 Not Found", b"not found: try GET /metrics\n", b"text/plain"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
