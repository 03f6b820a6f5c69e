"""Test kit: talk to a runner exactly as APISIX does, without APISIX.

For plugin authors and for this project's own tests. Everything goes over the runner's real
Unix socket and follows PROTOCOL.md to the letter:

- ``GatewayClient`` is the gateway's ext-plugin client: a pool of keep-alive connections,
  PrepareConf on first use of a conf (on the connection of the call that needs it), the
  CONF_TOKEN_NOT_FOUND flush-and-retry (3 tries), ExtraInfo answers, and the final answer applied
  the way the gateway applies it (Stop, Rewrite, HTTPRespCall). Any other failure is a 503, or
  the request passes unchanged with ``allow_degradation=True``; the connection is then closed.
- ``run_runner`` starts the real server in-process on a temporary socket;
  ``RunnerProcess`` starts it as a real subprocess (``python -m ...runner.cli run``).
- ``raw_connection`` sends and reads single frames, for robustness tests.

A minimal plugin test::

    async def test_denies_without_key() -> None:
        async with run_runner(plugins=[ApiKeyCheck]) as runner, runner.client() as gateway:
            outcome = await gateway.request([("api-key-check", {"key": "s3cret"})])
            assert outcome.response is not None and outcome.response.status == 401
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, Optional, Union
from urllib.parse import quote

from .conf_store import ConfStore
from .plugin import Plugin
from .protocol import messages as m
from .protocol.codec import decode_to_gateway, encode_to_runner
from .protocol.framing import HEADER_SIZE, ProtocolError, encode_frame
from .registry import PluginRegistry, load_spec
from .server import Server, bind_unix_socket

IGNORED_RESP_HEADERS = frozenset({
    "connection", "content-length", "transfer-encoding", "location", "server", "www-authenticate",
    "content-encoding", "content-type", "content-location", "content-language",
})
"""Response-header names the gateway ignores in a Rewrite's ``resp_headers`` and drops when it
copies the upstream's headers for an HTTPRespCall answer that names none."""

CONF_TOKEN_TRIES = 3
"""The gateway's tries for one call when the runner keeps answering CONF_TOKEN_NOT_FOUND."""


# --- confs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conf:
    """A route's ext-plugin conf: ``(plugin name, JSON string)`` in execution order, plus the
    optional PrepareConf key (``route#<id>#<gateway plugin>#<version>`` on a real gateway)."""

    entries: tuple[tuple[str, str], ...]
    key: Optional[str] = None

    @classmethod
    def of(cls, entries: Iterable[tuple[str, Any]], key: Optional[str] = None) -> "Conf":
        """Entries whose value is not already a string are JSON-encoded."""
        return cls(
            tuple((name, v if isinstance(v, str) else json.dumps(v)) for name, v in entries), key
        )


ConfLike = Union[Conf, Iterable[tuple[str, Any]]]


def as_conf(conf: ConfLike) -> Conf:
    return conf if isinstance(conf, Conf) else Conf.of(conf)


# --- outcomes ------------------------------------------------------------------------------------


class FrameLog(NamedTuple):
    """One frame of an exchange: ``direction`` is ``"to_runner"`` or ``"to_gateway"``."""

    direction: str
    type: m.MessageType


def _first(headers: Sequence[tuple[str, str]], name: str) -> Optional[str]:
    key = name.lower()
    return next((v for k, v in headers if k.lower() == key), None)


@dataclass
class ClientResponse:
    """What the gateway's client gets."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        return _first(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class UpstreamRequest:
    """The request the gateway would send upstream after the runner's answer."""

    method: str
    path: str
    args: list[m.Entry]
    headers: list[tuple[str, str]]
    body: bytes
    #: the upstream Host (changed by a Rewrite ``host`` header)
    host: Optional[str] = None

    def header(self, name: str) -> Optional[str]:
        return _first(self.headers, name)

    def header_values(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self.headers if k == key]

    def arg_values(self, name: str) -> list[Optional[str]]:
        return [v for k, v in self.args if k == name]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RequestOutcome:
    """The result of one request phase.

    ``action`` is ``"none"``, ``"rewrite"``, ``"stop"``, ``"error"`` (the client got 503) or
    ``"degraded"`` (an error, but the route allows degradation: passed through unchanged).
    ``response`` is set for ``stop`` and ``error``; ``upstream`` otherwise.
    """

    action: str
    response: Optional[ClientResponse] = None
    upstream: Optional[UpstreamRequest] = None
    resp_headers: list[tuple[str, str]] = field(default_factory=list)
    frames: list[FrameLog] = field(default_factory=list)
    error: Optional[str] = None
    answer: Optional[m.HTTPReqCallResponse] = None

    @property
    def extra_info_round_trips(self) -> int:
        return sum(1 for f in self.frames if f == ("to_gateway", m.MessageType.EXTRA_INFO))


@dataclass
class ResponseOutcome:
    """The client response after the response phase; ``action`` is ``"answered"``, ``"error"``
    (503) or ``"degraded"`` (upstream response passed through unchanged)."""

    action: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    frames: list[FrameLog] = field(default_factory=list)
    error: Optional[str] = None
    answer: Optional[m.HTTPRespCallResponse] = None

    def header(self, name: str) -> Optional[str]:
        return _first(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)


class GatewayError(Exception):
    """The runner failed the call the way the gateway treats as fatal (503 or degrade)."""


class _TokenLost(Exception):
    pass


# --- one connection --------------------------------------------------------------------------


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.log: list[FrameLog] = []

    async def send(self, msg: m.ToRunner) -> None:
        frame = encode_to_runner(msg)
        self.log.append(FrameLog("to_runner", m.MessageType(frame[0])))
        try:
            self.writer.write(frame)
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except OSError as exc:  # the runner died or closed: the gateway answers 503
            raise GatewayError(f"cannot send to the runner: {exc}") from None
        except asyncio.TimeoutError:
            raise GatewayError("timed out sending to the runner") from None

    async def receive(self) -> m.ToGateway:
        try:
            header = await asyncio.wait_for(self.reader.readexactly(HEADER_SIZE), self.timeout)
            size = int.from_bytes(header[1:], "big")
            payload = await asyncio.wait_for(self.reader.readexactly(size), self.timeout)
        except (asyncio.IncompleteReadError, OSError):
            raise GatewayError("the runner closed the connection") from None
        except asyncio.TimeoutError:
            raise GatewayError("timed out waiting for the runner") from None
        if header[0] > m.MessageType.HTTP_RESP_CALL:
            raise GatewayError(f"unexpected message type {header[0]}")
        self.log.append(FrameLog("to_gateway", m.MessageType(header[0])))
        try:
            return decode_to_gateway(header[0], payload)
        except ProtocolError as exc:
            raise GatewayError(f"malformed answer: {exc}") from None

    def close(self) -> None:
        self.writer.close()


# --- the client ----------------------------------------------------------------------------------


Vars = Mapping[str, Optional[str]]


class GatewayClient:
    """The gateway's side of the protocol, over a runner's real socket.

    ``pool_size`` idle connections are kept for reuse (the gateway keeps 32 per worker);
    concurrent calls open more. Tokens are cached per conf, as the gateway does.
    """

    def __init__(self, socket_path: str, *, pool_size: int = 32, timeout: float = 60.0,
                 connect_timeout: float = 1.0) -> None:
        self.socket_path = socket_path
        self.pool_size = pool_size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: list[_Conn] = []
        self._tokens: dict[Conf, int] = {}
        #: connections opened so far (to assert keep-alive reuse)
        self.connections_opened = 0

    async def __aenter__(self) -> "GatewayClient":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    def forget_tokens(self) -> None:
        """What the gateway does on CONF_TOKEN_NOT_FOUND or when the runner restarts."""
        self._tokens.clear()

    def token(self, conf: ConfLike) -> Optional[int]:
        """The cached token of ``conf``, if prepared."""
        return self._tokens.get(as_conf(conf))

    async def _acquire(self) -> _Conn:
        if self._idle:
            conn = self._idle.pop()
            conn.log = []
            return conn
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path), self.connect_timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise GatewayError(f"cannot connect to {self.socket_path}: {exc}") from None
        self.connections_opened += 1
        return _Conn(reader, writer, self.timeout)

    def _release(self, conn: _Conn) -> None:
        if len(self._idle) < self.pool_size and not conn.writer.is_closing():
            self._idle.append(conn)
        else:
            conn.close()

    async def _token_on(self, conn: _Conn, conf: Conf) -> int:
        token = self._tokens.get(conf)
        if token is not None:
            return token
        await conn.send(m.PrepareConfRequest(list(conf.entries), conf.key))
        answer = await conn.receive()
        if isinstance(answer, m.ErrorResponse):
            raise GatewayError(f"PrepareConf refused: {answer.code.name}")
        if not isinstance(answer, m.PrepareConfResponse):
            raise GatewayError(f"unexpected answer to PrepareConf: {type(answer).__name__}")
        self._tokens[conf] = answer.conf_token
        return answer.conf_token

    async def prepare(self, conf: ConfLike) -> int:
        """PrepareConf now (normally done on first use); raises ``GatewayError`` if refused."""
        conn = await self._acquire()
        try:
            token = await self._token_on(conn, as_conf(conf))
        except BaseException:
            conn.close()
            raise
        self._release(conn)
        return token

    async def _call(
        self,
        conf: Conf,
        build: Callable[[int], m.ToRunner],
        answer_info: Callable[[m.Info], Optional[bytes]],
        final: type,
    ) -> tuple[m.ToGateway, list[FrameLog]]:
        """One call with the gateway's retry on CONF_TOKEN_NOT_FOUND; raises ``GatewayError``."""
        frames: list[FrameLog] = []
        for _ in range(CONF_TOKEN_TRIES):
            conn = await self._acquire()
            try:
                token = await self._token_on(conn, conf)
                await conn.send(build(token))
                while True:
                    answer = await conn.receive()
                    if isinstance(answer, m.ExtraInfoRequest):
                        await conn.send(m.ExtraInfoResponse(answer_info(answer.info)))
                        continue
                    if isinstance(answer, m.ErrorResponse):
                        if answer.code == m.ErrorCode.CONF_TOKEN_NOT_FOUND:
                            raise _TokenLost()
                        raise GatewayError(f"runner answered error {answer.code.name}")
                    if not isinstance(answer, final):
                        raise GatewayError(f"unexpected answer type {type(answer).__name__}")
                    break
            except _TokenLost:
                frames.extend(conn.log)
                conn.close()
                self.forget_tokens()
                continue
            except BaseException:
                frames.extend(conn.log)
                conn.close()
                raise
            frames.extend(conn.log)
            self._release(conn)
            return answer, frames
        raise GatewayError(f"conf token not found after {CONF_TOKEN_TRIES} tries")

    async def request(
        self,
        conf: ConfLike,
        *,
        method: str = "GET",
        path: str = "/",
        args: Iterable[tuple[str, Optional[str]]] = (),
        headers: Union[Mapping[str, str], Iterable[tuple[str, str]]] = (),
        body: bytes = b"",
        src_ip: str = "127.0.0.1",
        vars: Optional[Vars] = None,
        allow_degradation: bool = False,
        call_id: int = 0,
    ) -> RequestOutcome:
        """The request phase (ext-plugin-pre-req / post-req) for one client request."""
        the_conf = as_conf(conf)
        items = headers.items() if isinstance(headers, Mapping) else headers
        header_list = [(k.lower(), v) for k, v in items]
        arg_list = list(args)
        method = method.upper()
        original = UpstreamRequest(method, path, list(arg_list), list(header_list), body,
                                   _first(header_list, "host"))
        lookup = _RequestVars(original, src_ip, vars or {})

        def build(token: int) -> m.HTTPReqCallRequest:
            return m.HTTPReqCallRequest(
                call_id, token, m.METHODS.index(method), path,
                ipaddress.ip_address(src_ip).packed, list(arg_list), list(header_list),
            )

        def answer_info(info: m.Info) -> Optional[bytes]:
            if isinstance(info, m.Var):
                return lookup.get(info.name)
            if isinstance(info, m.ReqBody):
                return body or None
            return None  # RespBody in the request phase: the gateway has none

        try:
            answer, frames = await self._call(the_conf, build, answer_info, m.HTTPReqCallResponse)
        except GatewayError as exc:
            return _failed_request(original, str(exc), allow_degradation)
        assert isinstance(answer, m.HTTPReqCallResponse)
        return _apply_request_answer(original, answer, frames)

    async def response(
        self,
        conf: ConfLike,
        *,
        status: int = 200,
        headers: Union[Mapping[str, str], Iterable[tuple[str, str]]] = (),
        body: bytes = b"",
        vars: Optional[Vars] = None,
        request_headers: Union[Mapping[str, str], Iterable[tuple[str, str]], None] = None,
        allow_degradation: bool = False,
        call_id: int = 0,
    ) -> ResponseOutcome:
        """The response phase (ext-plugin-post-resp) for one upstream response."""
        the_conf = as_conf(conf)
        items = headers.items() if isinstance(headers, Mapping) else headers
        header_list = [(k.lower(), v) for k, v in items]
        req_items = () if request_headers is None else (
            request_headers.items() if isinstance(request_headers, Mapping) else request_headers
        )
        req_headers = [(k.lower(), v) for k, v in req_items]
        given = dict(vars or {})

        def build(token: int) -> m.HTTPRespCallRequest:
            return m.HTTPRespCallRequest(call_id, token, status, list(header_list))

        def answer_info(info: m.Info) -> Optional[bytes]:
            if isinstance(info, m.Var):
                if info.name in given:
                    return _var_bytes(given[info.name])
                if info.name.startswith("http_"):
                    return _var_bytes(_joined(req_headers, info.name[5:].replace("_", "-")))
                return None
            if isinstance(info, m.RespBody):
                return body or None
            return None

        try:
            answer, frames = await self._call(the_conf, build, answer_info, m.HTTPRespCallResponse)
        except GatewayError as exc:
            if allow_degradation:
                return ResponseOutcome("degraded", status, _drop_ignored(header_list), body, error=str(exc))
            return ResponseOutcome("error", 503, [], b"", error=str(exc))
        assert isinstance(answer, m.HTTPRespCallResponse)
        if answer.headers:
            out_headers = [(k.lower(), v) for k, v in answer.headers if v is not None]
        else:
            out_headers = _drop_ignored(header_list)
        return ResponseOutcome(
            "answered",
            answer.status or status,
            out_headers,
            answer.body if answer.body else body,
            frames,
            answer=answer,
        )


def _drop_ignored(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in IGNORED_RESP_HEADERS]


def _joined(headers: Sequence[tuple[str, str]], name: str) -> Optional[str]:
    values = [v for k, v in headers if k == name]
    return ", ".join(values) if values else None


def _var_bytes(value: Optional[str]) -> Optional[bytes]:
    return value.encode("utf-8", "surrogateescape") if value else None


def _query(args: Iterable[m.Entry]) -> str:
    return "&".join(quote(k) if v is None else f"{quote(k)}={quote(v)}" for k, v in args)


class _RequestVars:
    """The nginx variables the test kit can answer in the request phase."""

    def __init__(self, request: UpstreamRequest, src_ip: str, given: Vars) -> None:
        self.request = request
        self.src_ip = src_ip
        self.given = given

    def get(self, name: str) -> Optional[bytes]:
        if name in self.given:
            return _var_bytes(self.given[name])
        req = self.request
        if name.startswith("http_"):
            return _var_bytes(_joined(req.headers, name[5:].replace("_", "-")))
        if name.startswith("arg_"):
            return _var_bytes(next((v for k, v in req.args if k == name[4:]), None))
        query = _query(req.args)
        known = {
            "request_method": req.method,
            "uri": req.path,
            "remote_addr": self.src_ip,
            "args": query,
            "request_uri": req.path + ("?" + query if query else ""),
            "host": req.host,
        }
        return _var_bytes(known.get(name))


def _failed_request(original: UpstreamRequest, error: str, allow_degradation: bool) -> RequestOutcome:
    if allow_degradation:
        return RequestOutcome("degraded", upstream=original, error=error)
    return RequestOutcome("error", response=ClientResponse(503, [], b""), error=error)


def _apply_request_answer(
    original: UpstreamRequest, answer: m.HTTPReqCallResponse, frames: list[FrameLog]
) -> RequestOutcome:
    action = answer.action
    if action is None:
        return RequestOutcome("none", upstream=original, frames=frames, answer=answer)
    if isinstance(action, m.Stop):
        headers = [(k.lower(), v) for k, v in action.headers if v is not None]
        response = ClientResponse(action.status or 200, headers, action.body)
        return RequestOutcome("stop", response=response, frames=frames, answer=answer)
    upstream = UpstreamRequest(
        original.method, original.path, list(original.args), list(original.headers),
        original.body, original.host,
    )
    if action.path:
        upstream.path = action.path
    for name, value in action.headers:
        key = name.lower()
        upstream.headers = [(k, v) for k, v in upstream.headers if k != key]
        if value is not None:
            upstream.headers.append((key, value))
            if key == "host":
                upstream.host = value
    changed: set[str] = set()
    for name, value in action.args:
        if value is None:
            upstream.args = [(k, v) for k, v in upstream.args if k != name]
            continue
        if name in changed:
            upstream.args.append((name, value))
        else:
            first = next((i for i, (k, _) in enumerate(upstream.args) if k == name), None)
            upstream.args = [(k, v) for k, v in upstream.args if k != name]
            upstream.args.insert(len(upstream.args) if first is None else first, (name, value))
        changed.add(name)
    if action.body:
        upstream.body = action.body
        if upstream.header("content-length") is not None:
            upstream.headers = [
                (k, str(len(action.body)) if k == "content-length" else v) for k, v in upstream.headers
            ]
    resp_headers = [
        (k.lower(), v) for k, v in action.resp_headers
        if v is not None and k.lower() not in IGNORED_RESP_HEADERS
    ]
    return RequestOutcome("rewrite", upstream=upstream, resp_headers=resp_headers, frames=frames,
                          answer=answer)


# --- raw frames ----------------------------------------------------------------------------------


class RawConnection:
    """One connection for robustness tests: send any bytes, read single frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def send_frame(self, msg_type: int, payload: bytes) -> None:
        await self.send_bytes(encode_frame(msg_type, payload))

    async def send(self, msg: m.ToRunner) -> None:
        await self.send_bytes(encode_to_runner(msg))

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame; raises ``asyncio.IncompleteReadError`` if the runner closed."""
        header = await asyncio.wait_for(self.reader.readexactly(HEADER_SIZE), self.timeout)
        size = int.from_bytes(header[1:], "big")
        return header[0], await asyncio.wait_for(self.reader.readexactly(size), self.timeout)

    async def read(self) -> m.ToGateway:
        return decode_to_gateway(*await self.read_frame())

    async def closed_by_peer(self) -> bool:
        """True once the runner has closed the connection (EOF within the timeout)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), self.timeout)
        except (asyncio.TimeoutError, ConnectionError):
            return False
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def __aenter__(self) -> "RawConnection":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


class _Opening:
    """``await raw_connection(...)`` or ``async with raw_connection(...) as raw``."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        self._path = socket_path
        self._timeout = timeout
        self._conn: Optional[RawConnection] = None

    async def _open(self) -> RawConnection:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self._path), self._timeout)
        return RawConnection(reader, writer, self._timeout)

    def __await__(self) -> Generator[Any, None, RawConnection]:
        return self._open().__await__()

    async def __aenter__(self) -> RawConnection:
        self._conn = await self._open()
        return self._conn

    async def __aexit__(self, *_: object) -> None:
        if self._conn is not None:
            await self._conn.close()


def raw_connection(socket_path: str, *, timeout: float = 5.0) -> _Opening:
    """A ``RawConnection`` to the runner (awaitable, or an async context manager)."""
    return _Opening(socket_path, timeout)


# --- running a runner ----------------------------------------------------------------------------


PluginLike = Union[Plugin[Any], type, str]


def _plugin(item: PluginLike) -> Plugin[Any]:
    if isinstance(item, Plugin):
        return item
    if isinstance(item, str):
        return load_spec(item)
    if isinstance(item, type) and issubclass(item, Plugin):
        return item()
    raise TypeError(f"not a plugin: {item!r}")


@dataclass
class RunningRunner:
    """A runner started by ``run_runner``: its socket, conf store and server."""

    socket_path: str
    store: ConfStore
    server: Server
    stop_event: asyncio.Event
    task: "asyncio.Task[None]"

    def client(self, **options: Any) -> GatewayClient:
        """A ``GatewayClient`` for this runner (options as for ``GatewayClient``)."""
        return GatewayClient(self.socket_path, **options)

    async def stop(self) -> None:
        """Shut down as on SIGTERM (in-flight calls get the shutdown grace) and wait for it."""
        self.stop_event.set()
        await self.task


@contextlib.asynccontextmanager
async def run_runner(
    plugins: Iterable[PluginLike] = (),
    *,
    builtins: bool = False,
    read_timeout: float = 60.0,
    shutdown_grace: float = 0.8,
    expire_time: float = 3600.0,
    clock: Any = time.monotonic,
    socket_mode: int = 0o766,
    sweep_interval: Optional[float] = None,
) -> AsyncIterator[RunningRunner]:
    """The real server, in this event loop, on a fresh temporary socket; stopped on exit.

    Only the given plugins are served (plus the built-ins with ``builtins=True``). ``clock``
    feeds the conf store's expiry (call ``runner.store.sweep()`` after moving it).
    """
    registry = PluginRegistry.discover(builtins=builtins, installed=False)
    for item in plugins:
        registry.add(_plugin(item))
    store = ConfStore(registry, expire_time=expire_time, clock=clock)
    directory = tempfile.mkdtemp(prefix="a6-")
    listening = bind_unix_socket(os.path.join(directory, "runner.sock"), socket_mode)
    server = Server(store, read_timeout=read_timeout, shutdown_grace=shutdown_grace,
                    sweep_interval=sweep_interval)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(server.serve(listening.sock, stop))
    try:
        yield RunningRunner(listening.path, store, server, stop, task)
    finally:
        stop.set()
        await task
        listening.close()
        shutil.rmtree(directory, ignore_errors=True)


def runner_command(*args: str) -> list[str]:
    """The command line of ``run`` through this interpreter (what the console script does)."""
    return [sys.executable, "-m", "apisix_openai_triton.runner.cli", "run", *args]


def wait_for_socket(path: str, timeout: float = 10.0, proc: Optional["subprocess.Popen[bytes]"] = None) -> None:
    """Poll until ``path`` accepts a connection; raises ``TimeoutError`` after ``timeout`` s
    (or ``RuntimeError`` as soon as ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            pass
        finally:
            probe.close()
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the runner exited with code {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing accepted connections on {path} within {timeout} s")
        time.sleep(0.005)


class RunnerProcess:
    """The runner as a real subprocess, listening on ``socket_path``; stderr goes to a file.

    Use as a context manager: it waits until the socket accepts, and terminates the process
    (SIGTERM, then SIGKILL) on exit.
    """

    def __init__(self, socket_path: str, *args: str, env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[str] = None, command: Optional[Sequence[str]] = None,
                 timeout: float = 15.0) -> None:
        self.socket_path = socket_path
        self.command = list(command or runner_command()) + ["--listen", socket_path, *args]
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.timeout = timeout
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> "subprocess.Popen[bytes]":
        self.proc = subprocess.Popen(
            self.command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=self._stderr, stderr=self._stderr,
        )
        try:
            wait_for_socket(self.socket_path, self.timeout, self.proc)
        except Exception:
            self.stop()
            raise
        return self.proc

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def __enter__(self) -> "RunnerProcess":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        self._stderr.close()
