"""The load generator of ``bench``: C keep-alive connections that behave like the gateway's pool.

Each connection carries one call at a time, as the gateway does. The client is driven by
callbacks (a ``Protocol`` per connection, no task per call) and writes frames encoded ahead of
time, so it needs far less CPU per call than the runner it measures; on a small machine it can
still be spread over several processes (``run_client_process`` is the body of one of them).

Latency is measured per call, from writing the call's first frame to reading its final answer,
so it includes every ExtraInfo round trip and, for ``openai-full``, both phases.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Optional, cast

from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import decode_to_gateway

from .bench_workloads import Workload, WorkloadSpec, build_workload

SETUP_TIMEOUT = 10.0
STALL_TIMEOUT = 10.0
"""A run is abandoned when no call at all completes for this long (a hung runner)."""


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What one client process does. ``duration`` and ``calls`` are exclusive."""

    socket_path: str
    workload: WorkloadSpec
    connections: int
    duration: Optional[float] = None
    calls: Optional[int] = None
    rate: Optional[float] = None
    warmup: float = 1.0
    verify_all: bool = False
    uvloop: bool = True


@dataclass(frozen=True, slots=True)
class ClientResult:
    """One client process's measured window."""

    calls: int
    ok: int
    verified: int
    first_failure: Optional[str]
    elapsed_s: float
    client_cpu_s: float
    latencies_ns: bytes
    """``array('q')`` of per-call latencies, as bytes (cheap to send between processes)."""

    @property
    def failed(self) -> int:
        return self.calls - self.ok


class _Conn(asyncio.Protocol):
    """One gateway connection: the frames of its calls, and where the current call is."""

    def __init__(self, driver: "_Driver") -> None:
        self.driver = driver
        self.transport: Optional[asyncio.Transport] = None
        self.frames: list[bytes] = []
        self.phase = 0
        self.t0 = 0
        self.checked = False
        self.verifying = False
        self.alive = True
        self.busy = False
        self._buf = b""
        self._waiter: Optional[asyncio.Future[tuple[int, bytes]]] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.alive = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("the runner closed the connection"))
        if self.busy:
            self.driver.call_done(self, "the runner closed the connection mid-call")

    async def exchange(self, frame: bytes) -> tuple[int, bytes]:
        """Send one frame and wait for the next one (connection set-up only)."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(frame)
        return await asyncio.wait_for(self._waiter, SETUP_TIMEOUT)

    def send_call(self) -> None:
        if not self.alive:
            self.driver.call_done(self, "connection closed")
            return
        assert self.transport is not None
        self.phase = 0
        self.busy = True
        self.verifying = self.driver.verify_all or not self.checked
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.frames[0])

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        have = len(buf)
        while have - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos + 1:pos + 4], "big")
            if end > have:
                break
            self._on_frame(buf[pos], buf[pos + 4:end])
            pos = end
        self._buf = buf[pos:] if pos < have else b""

    def _on_frame(self, kind: int, payload: bytes) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result((kind, payload))
            return
        driver = self.driver
        if kind == m.MessageType.EXTRA_INFO:
            assert self.transport is not None
            self.transport.write(driver.workload.answer(payload))
            return
        phase = driver.workload.phases[self.phase]
        if kind != phase.final_type:
            self.driver.call_done(self, _describe_unexpected(kind, payload, phase.final_type))
            return
        if self.verifying:
            problem = phase.check(decode_to_gateway(kind, payload))
            if problem is not None:
                self.driver.call_done(self, problem)
                return
        self.phase += 1
        if self.phase < len(self.frames):
            assert self.transport is not None
            self.transport.write(self.frames[self.phase])
            return
        if self.verifying:
            self.checked = True
            driver.verified += 1
        driver.call_done(self, None)


def _describe_unexpected(kind: int, payload: bytes, wanted: int) -> str:
    if kind == m.MessageType.ERROR:
        try:
            err = decode_to_gateway(kind, payload)
        except Exception as exc:  # the answer is wrong either way; say what we can
            return f"undecodable error frame: {exc}"
        if isinstance(err, m.ErrorResponse):
            return f"runner answered error {err.code.name}"
    return f"answer of type {kind}, expected {wanted}"


class _Driver:
    """Starts calls on idle connections (at once, or on a rate schedule) and records results."""

    def __init__(self, loop: asyncio.AbstractEventLoop, spec: ClientSpec, workload: Workload) -> None:
        self.spec = spec
        self.workload = workload
        self.verify_all = spec.verify_all
        self.conns: list[_Conn] = []
        self.latencies = array("q")
        self.record = False
        self.completed = self.ok = self.verified = 0
        self.first_failure: Optional[str] = None
        self.deadline = math.inf
        self.remaining = -1
        self.interval = 1.0 / spec.rate if spec.rate else 0.0
        self.t_start = 0.0
        self.issued = 0
        self.active = 0
        self._loop = loop
        self._idle: Optional[asyncio.Future[None]] = None

    async def connect_all(self) -> None:
        prepare = self.workload.prepare_frames()

        async def connect() -> _Conn:
            _, conn = await asyncio.wait_for(self._loop.create_unix_connection(
                lambda: _Conn(self), self.spec.socket_path), SETUP_TIMEOUT)
            tokens = []
            for frame in prepare:
                kind, payload = await conn.exchange(frame)
                answer = decode_to_gateway(kind, payload)
                if not isinstance(answer, m.PrepareConfResponse):
                    raise RuntimeError(f"PrepareConf refused ({answer!r}) for confs "
                                       f"{self.workload.confs}: is the plugin loaded?")
                tokens.append(answer.conf_token)
            conn.frames = self.workload.call_frames(tokens)
            return conn

        self.conns = list(await asyncio.gather(*(connect() for _ in range(self.spec.connections))))

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()

    async def run(self, duration: Optional[float], calls: Optional[int], record: bool) -> float:
        """Run calls until the duration is over or ``calls`` completed; the elapsed seconds."""
        loop = self._loop
        self.record = record
        self.latencies = array("q")
        self.completed = self.ok = self.verified = 0
        self.first_failure = None
        now = loop.time()
        self.deadline = now + duration if duration else math.inf
        self.remaining = calls if calls else -1
        self.t_start = now
        self.issued = 0
        conns = [c for c in self.conns if c.alive]
        if not conns:
            raise ConnectionError("every connection to the runner is closed")
        for conn in conns:
            conn.checked = False
        self.active = len(conns)
        self._idle = loop.create_future()
        watchdog = loop.create_task(self._watch())
        started = time.perf_counter()
        for conn in conns:
            self._next(conn)
        try:
            await self._idle
        finally:
            watchdog.cancel()
        return time.perf_counter() - started

    async def _watch(self) -> None:
        last = -1
        while True:
            await asyncio.sleep(STALL_TIMEOUT)
            if self.completed == last and self._idle is not None and not self._idle.done():
                self._idle.set_exception(TimeoutError(
                    f"no call completed for {STALL_TIMEOUT:.0f} s: the runner hangs"))
            last = self.completed

    def call_done(self, conn: _Conn, problem: Optional[str]) -> None:
        latency = time.perf_counter_ns() - conn.t0
        conn.busy = False
        self.completed += 1
        if problem is None:
            self.ok += 1
            if self.record:
                self.latencies.append(latency)
        elif self.first_failure is None:
            self.first_failure = problem
        self._next(conn)

    def _next(self, conn: _Conn) -> None:
        loop = self._loop
        now = loop.time()
        if not conn.alive or now >= self.deadline or self.remaining == 0:
            self._retire()
            return
        if self.remaining > 0:
            self.remaining -= 1
        if self.interval:
            slot = self.t_start + self.issued * self.interval
            self.issued += 1
            if slot > now:
                if slot >= self.deadline:
                    self._retire()
                    return
                loop.call_at(slot, conn.send_call)
                return
        conn.send_call()

    def _retire(self) -> None:
        self.active -= 1
        if self.active == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_client_process(spec: ClientSpec, pipe: Connection) -> None:
    """Body of one client process: set up and warm up, say "ready", wait for "go", measure.

    Messages sent on ``pipe``: ``("ready", None)``, then ``("result", ClientResult)``, or
    ``("error", text)`` at any point.
    """
    loop = _new_loop(spec.uvloop)
    asyncio.set_event_loop(loop)
    driver: Optional[_Driver] = None
    try:
        driver = _Driver(loop, spec, build_workload(spec.workload))
        loop.run_until_complete(driver.connect_all())
        if spec.warmup > 0:
            loop.run_until_complete(driver.run(spec.warmup, None, record=False))
            if driver.ok == 0:
                raise RuntimeError(f"no call succeeded during warm-up: {driver.first_failure}")
        pipe.send(("ready", None))
        if pipe.recv() != "go":
            return
        cpu = _cpu_s()
        elapsed = loop.run_until_complete(driver.run(spec.duration, spec.calls, record=True))
        pipe.send(("result", ClientResult(
            driver.completed, driver.ok, driver.verified, driver.first_failure, elapsed,
            _cpu_s() - cpu, driver.latencies.tobytes())))
    except Exception as exc:  # reported to the parent, which prints it once
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if driver is not None:
            driver.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        pipe.close()
