"""One gateway connection: frames in, calls run strictly in order, answers out.

An ``asyncio.Protocol`` feeds a ``FrameDecoder`` and hands whole frames to one coroutine per
connection, which awaits them (cheaper than ``StreamReader``: no per-read future unless the
coroutine is actually waiting). While a call runs, the plugins' ``body()``/``var()`` questions go
out on the same connection and the next frame must be the gateway's ExtraInfo answer.

Failure policy, per PROTOCOL.md: a plugin error answers Err SERVICE_UNAVAILABLE (the gateway
answers 503 or degrades), malformed input closes this connection only, and a peer that goes away
mid-call cancels that call quietly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Optional, Protocol, Union, cast

from .conf_store import ConfStore, Prefetch, PreparedConf
from .metrics import Metrics
from .plugin import Request, Response
from .protocol import messages as m
from .protocol.codec import decode_to_runner, encode_to_gateway, read_extra_info_result
from .protocol.framing import FrameDecoder, FrameTooLarge, ProtocolError

log = logging.getLogger("apisix_openai_triton.runner.server")

Frame = tuple[int, bytes]

_PREPARE_CONF = int(m.MessageType.PREPARE_CONF)
_HTTP_REQ_CALL = int(m.MessageType.HTTP_REQ_CALL)
_EXTRA_INFO = int(m.MessageType.EXTRA_INFO)
_HTTP_RESP_CALL = int(m.MessageType.HTTP_RESP_CALL)
_CALL_TYPE_NAMES = {
    _PREPARE_CONF: "prepare_conf", _HTTP_REQ_CALL: "http_req_call", _HTTP_RESP_CALL: "http_resp_call",
}
_now = time.perf_counter

ERR_BAD_REQUEST = encode_to_gateway(m.ErrorResponse(m.ErrorCode.BAD_REQUEST))
ERR_SERVICE_UNAVAILABLE = encode_to_gateway(m.ErrorResponse(m.ErrorCode.SERVICE_UNAVAILABLE))
ERR_CONF_TOKEN_NOT_FOUND = encode_to_gateway(m.ErrorResponse(m.ErrorCode.CONF_TOKEN_NOT_FOUND))

# Frames a peer may have queued ahead of the coroutine before reading pauses; the gateway
# never has more than one in flight, so this only bounds a misbehaving peer.
_MAX_QUEUED = 4


class Owner(Protocol):
    """What a connection needs from the server that accepted it."""

    store: ConfStore
    draining: bool
    metrics: Optional[Metrics]

    def connection_closed(self, conn: "Connection") -> None: ...


class CallAborted(Exception):
    """The connection is gone or broke the protocol: the current call is abandoned."""


class Connection(asyncio.Protocol):
    __slots__ = (
        "_owner", "_store", "_loop", "_transport", "_decoder", "_frames", "_waiter", "_task",
        "_closed", "in_call", "_asking", "_rx", "_rx_seen", "_stalled", "_read_paused",
        "_write_paused", "_ask", "_metrics", "_drained",
    )

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._store = owner.store
        self._loop = asyncio.get_running_loop()
        self._transport: Optional[asyncio.Transport] = None
        self._decoder = FrameDecoder()
        self._frames: deque[Frame] = deque()
        self._waiter: Optional[asyncio.Future[Frame]] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._closed = False
        #: a call is being handled (shutdown lets it finish before closing)
        self.in_call = False
        self._asking = False
        self._rx = 0
        self._rx_seen = 0
        self._stalled = 0.0
        self._read_paused = False
        self._write_paused = False
        self._ask = self.ask  # bound once: every Request/Response of this connection gets it
        self._metrics = owner.metrics
        self._drained: Optional[asyncio.Future[None]] = None

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self._transport = cast(asyncio.Transport, transport)
        self._task = self._loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._rx += 1
        try:
            frames = self._decoder.frames(data)
        except ProtocolError as exc:
            self.violation(str(exc))
            return
        for frame in frames:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self._waiter = None
                waiter.set_result(frame)
            else:
                self._frames.append(frame)
        if len(self._frames) >= _MAX_QUEUED and not self._read_paused:
            self._read_paused = True
            self._update_reading()

    def eof_received(self) -> Optional[bool]:
        return False  # close our side too: the gateway never half-closes

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._closed = True
        self._owner.connection_closed(self)
        task = self._task
        if task is not None and not task.done():
            task.cancel()

    def pause_writing(self) -> None:
        # A peer that does not read its answers stops being read: memory stays bounded.
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # --- server-facing ---------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    @property
    def task(self) -> Optional[asyncio.Task[None]]:
        return self._task

    def tick(self, interval: float, timeout: float) -> None:
        """Called every ``interval`` s: closes a peer stuck mid-frame or mid-answer too long."""
        if self._closed or not (self._asking or self._decoder.pending()):
            self._stalled = 0.0
            self._rx_seen = self._rx
            return
        if self._rx != self._rx_seen:
            self._rx_seen = self._rx
            self._stalled = 0.0
            return
        self._stalled += interval
        if self._stalled >= timeout:
            log.warning("closing a connection: no data from the gateway for %.1f s mid-message", timeout)
            self.close()

    def violation(self, reason: str) -> None:
        """Malformed or unexpected input: log one line and drop this connection."""
        if not self._closed:
            log.warning("closing a connection: protocol violation: %s", reason)
            if self._metrics is not None:
                self._metrics.error("protocol_violation")
        self.close()

    # --- the call loop ---------------------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        if self._write_paused or self._read_paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    async def _next_frame(self) -> Frame:
        frames = self._frames
        if frames:
            frame = frames.popleft()
            if self._read_paused and len(frames) < _MAX_QUEUED // 2:
                self._read_paused = False
                self._update_reading()
            return frame
        if self._closed:
            raise CallAborted()
        waiter: asyncio.Future[Frame] = self._loop.create_future()
        self._waiter = waiter
        return await waiter

    def _decode(self, frame: Frame) -> m.ToRunner:
        try:
            return decode_to_runner(frame[0], frame[1], True)
        except Exception as exc:  # the codec must reject, never crash the server
            self.violation(f"undecodable message of type {frame[0]}: {exc}")
            raise CallAborted() from None

    async def _serve(self) -> None:
        transport = self._transport
        assert transport is not None
        owner = self._owner
        metrics = self._metrics
        started = 0.0
        try:
            while True:
                frame = await self._next_frame()
                self.in_call = True
                if metrics is not None:
                    started = _now()
                msg_type = frame[0]
                answer: bytes
                if msg_type == _HTTP_REQ_CALL:
                    answer = await self._request_call(frame)
                elif msg_type == _HTTP_RESP_CALL:
                    answer = await self._response_call(frame)
                elif msg_type == _PREPARE_CONF:
                    answer = self._prepare_conf(frame)
                else:
                    self.violation(f"message type {msg_type} where a call was expected")
                    return
                if self._closed:
                    return
                transport.write(answer)
                self.in_call = False
                if metrics is not None:
                    metrics.observe(_CALL_TYPE_NAMES[msg_type], _now() - started)
                if owner.draining:
                    self.close()
                    return
                if self._write_paused:
                    # Frames already queued must not each add an answer to the backlog of a
                    # peer that does not read: one unread answer per connection at most.
                    self._drained = self._loop.create_future()
                    await self._drained
        except (CallAborted, asyncio.CancelledError):
            return  # the peer left or broke the protocol (already logged): nothing to answer
        except Exception:
            log.exception("internal error on a gateway connection; closing it")
            self.close()

    # --- messages --------------------------------------------------------------------------

    def _prepare_conf(self, frame: Frame) -> bytes:
        msg = self._decode(frame)
        assert isinstance(msg, m.PrepareConfRequest)
        try:
            token = self._store.prepare(msg.conf, msg.key)
        except Exception as exc:  # ConfRejected, or a hook failing: fail closed either way
            log.warning("PrepareConf refused (key %s): %s", msg.key or "-", exc)
            if self._metrics is not None:
                self._metrics.error("conf_rejected")
            return ERR_BAD_REQUEST
        return encode_to_gateway(m.PrepareConfResponse(token))

    async def _lookup(self, token: int) -> Optional[PreparedConf]:
        entry = self._store.get(token)
        if entry is None and self._store.on_miss is not None:
            entry = await self._store.recover(token)
        if entry is None and self._metrics is not None:
            self._metrics.error("conf_token_not_found")
        return entry

    async def _request_call(self, frame: Frame) -> bytes:
        call = self._decode(frame)
        assert isinstance(call, m.HTTPReqCallRequest)
        entry = await self._lookup(call.conf_token)
        if entry is None:
            return ERR_CONF_TOKEN_NOT_FOUND
        chain = entry.request_chain
        if not chain:
            return encode_to_gateway(m.HTTPReqCallResponse(call.id))
        request = Request(call, self._ask)
        if entry.request_prefetch is not None:
            await self._prefetch(entry.request_prefetch, request)
        name = chain[0][0]
        metrics = self._metrics
        try:
            action: m.Action = None
            for name, request_filter, conf in chain:
                if metrics is not None:
                    metrics.plugin_call("request", name)
                stop = await request_filter(conf, request)
                if stop is not None:
                    action = stop.to_message()
                    break
            else:
                action = request.to_action()
        except CallAborted:
            raise
        except Exception as exc:
            return self._filter_failed(exc, "request", name, call.id)
        return self._encode(m.HTTPReqCallResponse(call.id, action), call.id)

    async def _response_call(self, frame: Frame) -> bytes:
        call = self._decode(frame)
        assert isinstance(call, m.HTTPRespCallRequest)
        entry = await self._lookup(call.conf_token)
        if entry is None:
            return ERR_CONF_TOKEN_NOT_FOUND
        chain = entry.response_chain
        if not chain:
            return encode_to_gateway(m.HTTPRespCallResponse(call.id))
        response = Response(call, self._ask)
        if entry.response_prefetch is not None:
            await self._prefetch(entry.response_prefetch, response)
        name = chain[0][0]
        metrics = self._metrics
        try:
            for name, response_filter, conf in chain:
                if metrics is not None:
                    metrics.plugin_call("response", name)
                await response_filter(conf, response)
            answer = response.to_message()
        except CallAborted:
            raise
        except Exception as exc:
            return self._filter_failed(exc, "response", name, call.id)
        return self._encode(answer, call.id)

    def _filter_failed(self, exc: Exception, phase: str, name: str, call_id: int) -> bytes:
        """The answer when a filter raised; called from the ``except`` block (for the traceback).

        A lazily decoded header or argument that turns out malformed is the gateway breaking the
        protocol: the connection closes. Anything else is the plugin's fault: 503, so the route's
        ``allow_degradation`` decides what the client gets.
        """
        if isinstance(exc, ProtocolError):
            self.violation(f"undecodable call in the {phase} phase: {exc}")
            raise CallAborted() from None
        log.exception("plugin %r failed in the %s phase (call id %d): answering 503",
                      name, phase, call_id)
        if self._metrics is not None:
            self._metrics.error("plugin_error")
        return ERR_SERVICE_UNAVAILABLE

    def _encode(self, msg: m.ToGateway, call_id: int) -> bytes:
        try:
            return encode_to_gateway(msg)
        except FrameTooLarge as exc:
            log.error("the answer to call id %d cannot be sent (%s): answering 503", call_id, exc)
            if self._metrics is not None:
                self._metrics.error("answer_too_large")
            return ERR_SERVICE_UNAVAILABLE

    # --- ExtraInfo -------------------------------------------------------------------------

    async def ask(self, info: m.Info) -> Optional[bytes]:
        """One ExtraInfo round trip on this connection (what ``body()``/``var()`` await)."""
        if self._closed or self._transport is None:
            raise CallAborted()
        self._transport.write(encode_to_gateway(m.ExtraInfoRequest(info)))
        return await self._answer()

    async def _answer(self) -> Optional[bytes]:
        self._asking = True
        try:
            frame = await self._next_frame()
        finally:
            self._asking = False
        if frame[0] != _EXTRA_INFO:
            self.violation(f"message type {frame[0]} while waiting for an ExtraInfo answer")
            raise CallAborted()
        try:
            return read_extra_info_result(frame[1])
        except Exception as exc:  # the codec must reject, never crash the server
            self.violation(f"undecodable message of type {frame[0]}: {exc}")
            raise CallAborted() from None

    async def _prefetch(self, prefetch: Prefetch, view: Union[Request, Response]) -> None:
        """Send every declared question at once, then read the answers in order."""
        if self._closed or self._transport is None:
            raise CallAborted()
        self._transport.write(prefetch.frames)
        body: Optional[bytes] = None
        if prefetch.body:
            body = await self._answer() or b""
        variables: dict[str, Optional[str]] = {}
        for var_name in prefetch.var_names:
            raw = await self._answer()
            variables[var_name] = None if raw is None else raw.decode("utf-8", "replace")
        view.prime(body, variables)

