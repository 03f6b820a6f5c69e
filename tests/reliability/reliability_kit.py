"""Shared pieces of the reliability suite: tiny plugins whose answers prove which conf served
them, a steady well-behaved client that checks every answer while a test misbehaves beside it,
and builders for valid and hostile frames."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from apisix_openai_triton.runner import Plugin, Request, Stop
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import encode_to_gateway, encode_to_runner
from apisix_openai_triton.runner.logs import ROOT_LOGGER, OneLineFormatter
from apisix_openai_triton.runner.testkit import GatewayClient, run_runner

HERE = Path(__file__).resolve().parent


def subprocess_env() -> dict[str, str]:
    """The environment for a runner subprocess that can load ``reliability_kit`` plugins."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    return env


class Tag(Plugin[Any]):
    """Stops with 200 and ``<conf tag>|<path>``: an answer that names the conf that made it."""

    name = "tag"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return Stop(200, [("x-tag", str(conf["tag"]))], f"{conf['tag']}|{request.path}")


class Big(Plugin[Any]):
    """Stops with a body of ``conf["size"]`` bytes (large answers, answers over the frame limit)."""

    name = "big"

    def parse_conf(self, raw: str) -> Any:
        conf = json.loads(raw)
        return b"b" * int(conf["size"])

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return Stop(200, [], conf)


def tag_conf(tag: str) -> list[tuple[str, Any]]:
    return [("tag", {"tag": tag})]


@dataclass
class SteadyClient:
    """A well-behaved gateway connection doing calls back to back, checking every answer.

    ``start`` it next to whatever a test does to the runner; ``stop`` returns the number of
    calls, all of which were answered correctly (any wrong answer is in ``failures``).
    """

    socket_path: str
    tag: str = "steady"
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    _task: Optional["asyncio.Task[None]"] = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> "SteadyClient":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        conf = tag_conf(self.tag)
        async with GatewayClient(self.socket_path, pool_size=1, timeout=5.0) as gateway:
            while not self._stop.is_set():
                path = f"/steady/{self.calls}"
                outcome = await gateway.request(conf, path=path, call_id=self.calls)
                expected = f"{self.tag}|{path}".encode()
                if outcome.response is None or outcome.response.body != expected:
                    self.failures.append(f"call {self.calls}: {outcome.action} {outcome.error}")
                self.calls += 1
                await asyncio.sleep(0)  # let the misbehaving side of the test run too

    async def stop(self) -> int:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)
        assert not self.failures, self.failures[:5]
        return self.calls


def valid_to_runner_frames(token: int = 7) -> dict[str, bytes]:
    """One well-formed frame of every gateway -> runner message, with every field set."""
    return {
        "prepare_conf": encode_to_runner(m.PrepareConfRequest(
            [("tag", '{"tag": "x"}'), ("big", '{"size": 1}')], "route#1#ext-plugin-pre-req#1")),
        "http_req_call": encode_to_runner(m.HTTPReqCallRequest(
            id=9, conf_token=token, method=2, path="/v1/chat/completions", src_ip=bytes([10, 0, 0, 1]),
            args=[("a", "1"), ("flag", None)], headers=[("host", "h"), ("content-type", "json")])),
        "extra_info": encode_to_runner(m.ExtraInfoResponse(b"value bytes")),
        "http_resp_call": encode_to_runner(m.HTTPRespCallRequest(
            id=9, conf_token=token, status=200, headers=[("content-type", "application/json")])),
    }


def wrong_table_frames() -> dict[str, bytes]:
    """Valid FlatBuffers of runner -> gateway tables (some with unions) sent the wrong way,
    each under every type byte a gateway may use."""
    payloads = {
        "stop": encode_to_gateway(m.HTTPReqCallResponse(3, m.Stop(418, [("a", "b")], b"body"))),
        "rewrite": encode_to_gateway(m.HTTPReqCallResponse(
            3, m.Rewrite(path="/p", headers=[("h", None)], args=[("a", "1")], body=b"x"))),
        "extra_info_req": encode_to_gateway(m.ExtraInfoRequest(m.Var("uri"))),
        "resp_call_resp": encode_to_gateway(m.HTTPRespCallResponse(3, 200, [("a", "b")], b"x")),
        "err": encode_to_gateway(m.ErrorResponse(m.ErrorCode.BAD_REQUEST)),
        "prepare_resp": encode_to_gateway(m.PrepareConfResponse(12345)),
    }
    out = {}
    for name, frame in payloads.items():
        for msg_type in (1, 2, 3, 4):
            out[f"{name}-as-{msg_type}"] = bytes([msg_type]) + frame[1:]
    return out


class Touch(Plugin[Any]):
    """Reads every part of the call (so lazily decoded fields are decoded), asks for the body and
    a variable, then stops with a digest of what it saw; the response phase does the same."""

    name = "touch"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        seen = [request.method, request.path, str(request.src_ip), str(len(list(request.args.items()))),
                str(len(list(request.headers.items())))]
        seen.append(str(len(await request.body())))
        seen.append(str(await request.var("uri")))
        return Stop(200, [], "|".join(seen))

    async def response_filter(self, conf: Any, response: Any) -> None:
        seen = [str(response.upstream_status), str(len(list(response.headers.items())))]
        seen.append(str(len(await response.body())))
        response.set_body("|".join(seen))


class RecordCollector(logging.Handler):
    """Every record of the project's loggers, whatever other tests did to propagation."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def lines(self, level: int = logging.DEBUG) -> list[str]:
        with self._lock_records:
            return [self.format(r) for r in self.records if r.levelno >= level]

    def __enter__(self) -> "RecordCollector":
        self.setFormatter(OneLineFormatter())
        logger = logging.getLogger(ROOT_LOGGER)
        self._old_level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *_: object) -> None:
        logger = logging.getLogger(ROOT_LOGGER)
        logger.removeHandler(self)
        logger.setLevel(self._old_level)


class ThreadRunner:
    """The in-process runner on an event loop of its own thread, for synchronous tests
    (hypothesis drives plain blocking sockets against it), with a ``SteadyClient`` beside it."""

    def __init__(self, plugins: list[Any], read_timeout: float = 0.3) -> None:
        self.plugins = plugins
        self.read_timeout = read_timeout
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.socket_path = ""
        self.runner: Any = None
        self.steady: Optional[SteadyClient] = None
        self._done: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                        daemon=True)
        self._error: Optional[BaseException] = None

    async def _main(self) -> None:
        try:
            self._done = asyncio.Event()
            async with run_runner(plugins=self.plugins, read_timeout=self.read_timeout) as runner:
                self.runner = runner
                self.socket_path = runner.socket_path
                self.steady = SteadyClient(runner.socket_path).start()
                self.ready.set()
                await self._done.wait()
                await self.steady.stop()
        except BaseException as exc:  # reported by stop()
            self._error = exc
            self.ready.set()

    def start(self) -> "ThreadRunner":
        self._thread.start()
        assert self.ready.wait(10), "the runner thread did not start"
        if self._error is not None:
            raise self._error
        return self

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run ``coro`` on the runner's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connections(self) -> int:
        async def count() -> int:
            return len(self.runner.server.connections)
        return int(self.call(count()))

    def stop(self) -> int:
        """Stop the runner; returns the steady client's call count (all answered correctly)."""
        assert self._done is not None
        self.loop.call_soon_threadsafe(self._done.set)
        self._thread.join(15)
        self.loop.close()
        if self._error is not None:
            raise self._error
        assert self.steady is not None
        return self.steady.calls


def exchange(socket_path: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` as a peer that then says no more (half-close), and read until the runner
    closes; returns what it sent. A runner that neither answers nor closes fails the test."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on the runner's side already: what follows reads the EOF
        received = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise AssertionError(f"the runner hung: no answer and no close within {timeout} s "
                                     f"after {data[:40]!r}...") from None
            if not chunk:
                break
            received += chunk
        return bytes(received)
    finally:
        sock.close()


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The whole frames in ``data`` (what a runner answered); a partial tail is an error."""
    frames = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 4, f"half a frame header at the end of the answer: {data[pos:]!r}"
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        assert pos + 4 + size <= len(data), "a half-written frame in the runner's answer"
        frames.append((data[pos], data[pos + 4:pos + 4 + size]))
        pos += 4 + size
    return frames


async def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` on the event loop until it holds; fails after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)  # poll interval
