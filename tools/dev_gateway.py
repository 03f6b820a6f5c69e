"""``apisix-openai-triton dev``: a development stand-in for APISIX, not a gateway.

Trying the plugins should not need APISIX, etcd and Docker. This HTTP server takes the route
objects ``routes apply`` would store, and for each request does what APISIX's ext-plugin-*
plugins do, through the real runner socket (the test kit's ``GatewayClient``): pre-req and
post-req calls, Stop answered at once, Rewrite applied to the upstream request, the upstream
called, and with ext-plugin-post-resp the whole answer handed to the runner and its result sent
chunked. The gateway's own answers are mirrored where a client can see them: 404 without a
route, 502 when the upstream cannot be reached, 504 on an upstream timeout, 503 when the runner
fails (unless the route allows degradation).

It has none of a gateway's other duties (authentication, TLS, rate limits, health checks), so it
listens on loopback by default and says so when it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, unquote_plus

import aiohttp
from aiohttp import web
from yarl import URL

from apisix_openai_triton.runner.protocol.messages import METHODS
from apisix_openai_triton.runner.testkit import (
    ClientResponse,
    GatewayClient,
    UpstreamRequest,
)

from .dev_routes import DevRoute, PluginStep, RouteTable, UpstreamNodes, compile_routes
from .dev_runner import RunnerStartError, spawn_runner
from .routes import RouteFileError, load_route_file, plugin_validators

log = logging.getLogger("apisix_openai_triton.dev")

DEFAULT_LISTEN = "127.0.0.1:9080"
FRAME_BODY_LIMIT = 15 * 1024 * 1024
"""The largest body handed to the runner either way: it travels in one protocol frame (16 MiB
with its FlatBuffer around it)."""
DEFAULT_MAX_BODY = FRAME_BODY_LIMIT
STAND_IN_NOTICE = ("a development stand-in for APISIX, not a gateway: no authentication, TLS "
                   "or rate limits; do not expose it")

# Per-connection headers a proxy never forwards (RFC 9110, 7.6.1); the body length is recomputed.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length",
})
_PROXY_SET_HEADERS = frozenset({"host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto"})
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_TEXT = "text/plain; charset=utf-8"


def repo_route_file() -> Path:
    """Where ``deploy/routes.yaml`` is when this package runs from a clone (editable install)."""
    return Path(__file__).resolve().parent.parent / "deploy" / "routes.yaml"


def default_route_file() -> Optional[Path]:
    """``deploy/routes.yaml`` in the working directory, else the clone's copy, else none (an
    installed wheel carries no route file)."""
    for candidate in (Path.cwd() / "deploy" / "routes.yaml", repo_route_file()):
        if candidate.is_file():
            return candidate
    return None


def load_routes(path: str, upstream: Optional[str] = None) -> RouteTable:
    """A route file checked as ``routes apply`` checks it (the plugin confs too), compiled;
    ``upstream`` (``host:port``) replaces every route's nodes. Raises ``RouteFileError``."""
    override = None if upstream is None else {"nodes": [upstream]}
    return compile_routes(load_route_file(path, validators=plugin_validators(), upstream=override))


# --- one request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamCall:
    """A request as sent upstream; what ``observe_upstream`` receives (a debugging hook: tests
    read the exact Triton request from it). Holds the body: never log it."""

    route_id: str
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes


UpstreamObserver = Callable[[UpstreamCall], None]


def parse_args(query: str) -> list[tuple[str, Optional[str]]]:
    """Query arguments as the gateway reports them: one entry per value, and no value (not an
    empty one) for ``?flag``."""
    out: list[tuple[str, Optional[str]]] = []
    for part in query.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        out.append((unquote_plus(name), unquote_plus(value) if sep else None))
    return out


def _query(args: Iterable[tuple[str, Optional[str]]]) -> str:
    return "&".join(quote(k, safe="") if v is None else f"{quote(k, safe='')}={quote(v, safe='')}"
                    for k, v in args)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain",
                        charset="utf-8")


def _header_value(headers: Sequence[tuple[str, str]], name: str) -> Optional[str]:
    return next((v for k, v in headers if k == name), None)


@dataclass
class _Exchange:
    """What one client request has become so far."""

    route: DevRoute
    src_ip: str
    upstream: UpstreamRequest
    resp_headers: list[tuple[str, str]] = field(default_factory=list)


class DevGateway:
    """The request handling; one instance per server, sharing one runner client and one HTTP
    client session (keep-alive to the upstream, as the gateway keeps its upstream pool)."""

    def __init__(self, routes: RouteTable, runner_socket: str, *,
                 observe_upstream: Optional[UpstreamObserver] = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.routes = routes
        self.runner_socket = runner_socket
        self.observe_upstream = observe_upstream
        self.max_body_bytes = max_body_bytes
        self.client = GatewayClient(runner_socket)
        self._session: Optional[aiohttp.ClientSession] = None
        # The gateway's call ids: (worker id << 22) + a counter; one worker here.
        self._ids = itertools.count()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Bytes pass through untouched: no decompression, no cookie jar, no redirects.
            self._session = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(limit=0))
        return self._session

    def _call_id(self) -> int:
        return next(self._ids) % (1 << 22)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        route = self.routes.match(request.method, request.path, request.host)
        response = await self._serve(request, route)
        log.info("%s %s -> %d (route %s, %.1f ms)", request.method, request.path[:200],
                 response.status, route.id if route else "-", (time.monotonic() - started) * 1e3)
        return response

    async def _serve(self, request: web.Request, route: Optional[DevRoute]) -> web.StreamResponse:
        if route is None:
            return web.json_response({"error_msg": "404 Route Not Found"}, status=404)
        if request.method not in METHODS:
            return _text(405, f"405 Not Allowed: {request.method[:16]}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _text(413, "413 Request Entity Too Large")
        headers = [(k.lower(), v) for k, v in request.headers.items()]
        exchange = _Exchange(
            route, request.remote or "127.0.0.1",
            UpstreamRequest(request.method, request.path, parse_args(request.query_string),
                            headers, body, request.headers.get("host")),
        )
        for step in route.request_steps:
            stopped = await self._request_phase(exchange, step)
            if stopped is not None:
                return self._client_answer(stopped)
        if route.upstream is None:
            log.warning("route %s has no upstream and its plugins did not answer", route.id)
            return _text(503, "503 Service Unavailable: the route has no upstream")
        return await self._proxy(request, exchange, route.upstream)

    async def _request_phase(self, exchange: _Exchange,
                             step: PluginStep) -> Optional[ClientResponse]:
        """One ext-plugin-pre-req / post-req call: the client answer on Stop or failure, else
        ``None`` with the exchange's upstream request rewritten."""
        current = exchange.upstream
        outcome = await self.client.request(
            step.conf, method=current.method, path=current.path, args=current.args,
            headers=current.headers, body=current.body, src_ip=exchange.src_ip,
            allow_degradation=step.allow_degradation, call_id=self._call_id(),
        )
        if outcome.action == "error":
            log.error("route %s: the runner failed the request phase: %s", exchange.route.id,
                      outcome.error)
        elif outcome.action == "degraded":
            log.warning("route %s: the runner failed, continuing without it (allow_degradation):"
                        " %s", exchange.route.id, outcome.error)
        if outcome.response is not None:
            return outcome.response
        assert outcome.upstream is not None
        exchange.upstream = outcome.upstream
        exchange.resp_headers.extend(outcome.resp_headers)
        return None

    def _client_answer(self, answer: ClientResponse) -> web.Response:
        headers = [(k, v) for k, v in answer.headers if k not in _HOP_BY_HOP]
        if answer.status == 503 and not answer.body:
            return _text(503, "503 Service Unavailable: the plugin runner failed (see the log)")
        if _header_value(headers, "content-type") is None:
            headers.append(("content-type", _TEXT))
        return web.Response(status=answer.status, headers=headers, body=answer.body)

    def _upstream_call(self, exchange: _Exchange, nodes: UpstreamNodes) -> UpstreamCall:
        up = exchange.upstream
        node = nodes.pick()
        query = _query(up.args)
        url = f"{nodes.scheme}://{node}{quote(up.path, safe=_PATH_SAFE)}"
        url += f"?{query}" if query else ""
        # The gateway's own proxy headers replace the client's; X-Forwarded-For is extended.
        forwarded_for = _header_value(up.headers, "x-forwarded-for")
        headers = [(k, v) for k, v in up.headers
                   if k not in _HOP_BY_HOP and k not in _PROXY_SET_HEADERS]
        headers += [
            ("host", nodes.host_header(node, up.host) or node),
            ("x-real-ip", exchange.src_ip),
            ("x-forwarded-for", f"{forwarded_for}, {exchange.src_ip}" if forwarded_for
             else exchange.src_ip),
            ("x-forwarded-proto", "http"),
        ]
        return UpstreamCall(exchange.route.id, up.method, url, headers, up.body)

    async def _proxy(self, request: web.Request, exchange: _Exchange,
                     nodes: UpstreamNodes) -> web.StreamResponse:
        call = self._upstream_call(exchange, nodes)
        if self.observe_upstream is not None:
            self.observe_upstream(call)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=nodes.connect_timeout,
                                        sock_read=nodes.read_timeout)
        route = exchange.route
        try:
            async with self._http().request(
                call.method, URL(call.url, encoded=True), headers=call.headers,
                data=call.body or None, timeout=timeout, allow_redirects=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
            ) as upstream:
                if route.response_step is not None:
                    return await self._response_phase(request, exchange, route.response_step,
                                                      upstream)
                return await self._stream_through(request, exchange, upstream)
        except asyncio.TimeoutError:
            log.error("route %s: the upstream timed out (%s %s)", route.id, call.method,
                      URL(call.url).origin())
            return _text(504, "504 Gateway Time-out")
        except aiohttp.ClientError as exc:  # cannot connect, or the answer broke off early
            log.error("route %s: the upstream failed (%s): %s", route.id, URL(call.url).origin(),
                      exc)
            return _text(502, "502 Bad Gateway")

    async def _stream_through(self, request: web.Request, exchange: _Exchange,
                              upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = [(k, v) for k, v in _headers_of(upstream)
                   if k not in _HOP_BY_HOP or k == "content-length"]
        _set_headers(headers, exchange.resp_headers)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # Headers are gone: like nginx, end the connection rather than the body.
            log.error("route %s: the upstream failed mid-answer: %s", exchange.route.id, exc)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _response_phase(self, request: web.Request, exchange: _Exchange, step: PluginStep,
                              upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        body = bytearray()
        async for chunk in upstream.content.iter_any():
            body += chunk
            if len(body) > FRAME_BODY_LIMIT:
                log.error("route %s: the upstream answer is over %d bytes, more than one "
                          "protocol frame carries", exchange.route.id, FRAME_BODY_LIMIT)
                return _text(502, "502 Bad Gateway")
        up = exchange.upstream
        query = _query(up.args)
        outcome = await self.client.response(
            step.conf, status=upstream.status,
            headers=_headers_of(upstream),
            body=bytes(body), request_headers=up.headers,
            vars={
                "route_id": exchange.route.id,
                "remote_addr": exchange.src_ip,
                "request_method": request.method,
                "uri": request.path,
                "request_uri": request.path_qs,
                "upstream_uri": up.path + (f"?{query}" if query else ""),
                "upstream_status": str(upstream.status),
            },
            allow_degradation=step.allow_degradation, call_id=self._call_id(),
        )
        if outcome.action == "error":
            log.error("route %s: the runner failed the response phase: %s", exchange.route.id,
                      outcome.error)
            return _text(503, "503 Service Unavailable: the plugin runner failed (see the log)")
        if outcome.action == "degraded":
            log.warning("route %s: the runner failed, passing the upstream answer through "
                        "(allow_degradation): %s", exchange.route.id, outcome.error)
        headers = [(k, v) for k, v in outcome.headers if k not in _HOP_BY_HOP]
        _set_headers(headers, exchange.resp_headers)
        response = web.StreamResponse(status=outcome.status, headers=headers)
        if outcome.status not in (204, 304) and request.method != "HEAD":
            response.enable_chunked_encoding()  # the gateway's answer here is always chunked
        await response.prepare(request)
        if outcome.body:
            await response.write(outcome.body)
        await response.write_eof()
        return response


def _set_headers(headers: list[tuple[str, str]], replacing: Sequence[tuple[str, str]]) -> None:
    """Apply a Rewrite's ``resp_headers``: each name set (replaced), repeats added."""
    names = {k for k, _ in replacing}
    headers[:] = [(k, v) for k, v in headers if k not in names] + list(replacing)


def _headers_of(upstream: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in upstream.headers.items()]


# --- serving --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningDevGateway:
    gateway: DevGateway
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve_dev_gateway(
    routes: RouteTable, runner_socket: str, *, host: str = "127.0.0.1", port: int = 0,
    observe_upstream: Optional[UpstreamObserver] = None, max_body_bytes: int = DEFAULT_MAX_BODY,
) -> AsyncIterator[RunningDevGateway]:
    """Serve on host:port (0 picks a free port) until the block exits; ``OSError`` if the port
    cannot be bound."""
    gateway = DevGateway(routes, runner_socket, observe_upstream=observe_upstream,
                         max_body_bytes=max_body_bytes)
    runner = web.AppRunner(gateway.app(), access_log=None, handler_cancellation=True,
                           shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield RunningDevGateway(gateway, host, int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) for ``--listen``; argparse type."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def _node(value: str) -> str:
    parse_listen(value)
    return value


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM end the serving loop (and so every child, through its cleanup)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


async def wait_for_stop(stop: asyncio.Event,
                        runner_proc: Optional["subprocess.Popen[bytes]"]) -> int:
    """Serve until asked to stop (exit code 0), or until a spawned runner dies (1)."""
    waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
    died: Optional[asyncio.Future[Any]] = None
    if runner_proc is not None:
        died = asyncio.ensure_future(asyncio.to_thread(runner_proc.wait))
        waits.add(died)
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if died is not None and died in done and not stop.is_set():
        assert runner_proc is not None
        log.error("the runner exited with code %s; stopping", runner_proc.returncode)
        return 1
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- command line ---------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="serve a route file over HTTP through the real runner (a development stand-in for "
        "APISIX, not a gateway)",
        description="Development stand-in for APISIX, NOT a gateway: serves HTTP and, for each "
        "request, applies the matching route's ext-plugin-pre-req / post-req / post-resp "
        "plugins through the real runner socket the way APISIX does, then calls the route's "
        "upstream. No authentication, TLS or rate limits: keep it on loopback.",
    )
    parser.add_argument(
        "--routes", metavar="FILE",
        help="route file, as for `routes apply` (default: deploy/routes.yaml in the working "
        "directory, else the one in the repository this package runs from)")
    parser.add_argument("--listen", type=parse_listen, default=parse_listen(DEFAULT_LISTEN),
                        metavar="HOST:PORT", help=f"address to serve (default {DEFAULT_LISTEN})")
    runner = parser.add_mutually_exclusive_group()
    runner.add_argument("--runner-socket", metavar="PATH",
                        help="use the runner already listening on this Unix socket")
    runner.add_argument("--spawn-runner", action="store_true",
                        help="start `apisix-openai-triton run` on a temporary socket and stop "
                        "it on exit (the default)")
    parser.add_argument("--upstream", type=_node, metavar="HOST:PORT",
                        help="send every route's upstream requests here instead (e.g. to "
                        "`apisix-openai-triton mock-triton`)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, metavar="N",
                        help="largest request body accepted (default %(default)s)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"],
                        help="this command's log level (default %(default)s); one line per "
                        "request at info, never a body")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    path = args.routes or default_route_file()
    if path is None:
        print("dev: no route file: pass --routes FILE (deploy/routes.yaml in the repository is "
              "an example)", file=sys.stderr)
        return 2
    try:
        table = load_routes(str(path), args.upstream)
    except (RouteFileError, ImportError, ValueError) as exc:
        print(f"dev: {exc}", file=sys.stderr)
        return 2
    log.info("routes from %s: %s", path, ", ".join(
        f"{r.id} {' '.join(r.uris)}" for r in table.routes))
    return asyncio.run(_serve(args, table))


async def _serve(args: argparse.Namespace, table: RouteTable) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    host, port = args.listen
    async with contextlib.AsyncExitStack() as stack:
        proc = None
        if args.runner_socket:
            socket_path = args.runner_socket
            if not os.path.exists(socket_path):
                log.warning("nothing at %s yet: requests get 503 until a runner listens there",
                            socket_path)
        else:
            try:
                spawned = await stack.enter_async_context(spawn_runner())
            except RunnerStartError as exc:
                print(f"dev: the runner did not start: {exc}", file=sys.stderr)
                return 1
            socket_path, proc = spawned.socket_path, spawned.proc
        try:
            server = await stack.enter_async_context(
                serve_dev_gateway(table, socket_path, host=host, port=port,
                                  max_body_bytes=args.max_body_bytes))
        except OSError as exc:
            print(f"dev: cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                  "address with --listen HOST:PORT (port 0 picks a free one)", file=sys.stderr)
            return 1
        log.info("%s", STAND_IN_NOTICE)
        log.info("runner socket: %s%s", socket_path, " (spawned)" if proc else "")
        print(f"dev: serving {server.url} ({STAND_IN_NOTICE})", flush=True)
        code = await wait_for_stop(stop, proc)
    return code
