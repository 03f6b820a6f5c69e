"""Typed A6 messages <-> FlatBuffers payloads, in both directions.

The runner uses ``decode_to_runner`` and ``encode_to_gateway``; the gateway-side test kit uses
the other two. Everything malformed that arrives becomes a ``ProtocolError`` naming the message
(and, where it is known cheaply, the field and offset).

Hand-written (see flatbuf.py) because the ``flatbuffers`` runtime is slow. Measured with
bench/codec_bench.py (CPython 3.11, a shared 2-vCPU VM, interleaved runs) against that runtime
(its Builder, and readers written on its Table class the way generated code reads): decoding an
HTTPReqCall.Req with 10 headers and 3 args is 5.4-5.9x faster (about 20 us against 120 us
there), encoding a Rewrite answer 9.8-11x and an HTTPRespCall.Resp with a 2 KB body 9.4-9.9x.
Constant answers (no action, ReqBody / RespBody questions, errors, repeated Var questions) are
precomputed frames: millions per second.

Text: configuration (PrepareConf) must be valid UTF-8 and is decoded strictly. Strings that
carry HTTP data (path, argument and header names and values, in both directions) come from
clients and upstreams and may hold any bytes (a Latin-1 header value, a percent-decoded path):
they are decoded with ``surrogateescape`` and encoded back the same way, so such a request
passes through byte for byte instead of failing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TypeVar, Union

from . import flatbuf as fb
from .framing import ProtocolError
from .messages import (
    METHODS,
    Entry,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    Info,
    MessageType,
    PrepareConfRequest,
    PrepareConfResponse,
    ReqBody,
    RespBody,
    Rewrite,
    Stop,
    ToGateway,
    ToRunner,
    Var,
)

_T = TypeVar("_T")

_HTTP = "surrogateescape"
_CONF = "strict"

_ACTION_NONE, _ACTION_STOP, _ACTION_REWRITE = 0, 1, 2
_INFO_VAR, _INFO_REQ_BODY, _INFO_RESP_BODY = 1, 2, 3

# Table layouts, field by field in schema order (PROTOCOL.md).
_ERR_RESP = fb.TableWriter("B")
_PREPARE_CONF_REQ = fb.TableWriter("ref", "ref")
_PREPARE_CONF_RESP = fb.TableWriter("I")
_HTTP_REQ_CALL_REQ = fb.TableWriter("I", "ref", "B", "ref", "ref", "ref", "I")
_STOP = fb.TableWriter("H", "ref", "ref")
_REWRITE = fb.TableWriter("ref", "ref", "ref", "ref", "ref")
_HTTP_REQ_CALL_RESP = fb.TableWriter("I", "B", "ref")
_VAR = fb.TableWriter("ref")
_EMPTY = fb.TableWriter()
_EXTRA_INFO_REQ = fb.TableWriter("B", "ref")
_EXTRA_INFO_RESP = fb.TableWriter("ref")
_HTTP_RESP_CALL_REQ = fb.TableWriter("I", "H", "ref", "I")
_HTTP_RESP_CALL_RESP = fb.TableWriter("I", "H", "ref", "ref")

_u32 = fb.u32
_u16 = fb.u16
_u8 = fb.u8
_pack_u32 = struct.Struct("<I").pack


def _entries(entries: Sequence[Entry]) -> Union[fb.Child, None]:
    return fb.entries_child(entries) if entries else None


# --- gateway -> runner ---------------------------------------------------------------------


def _read_prepare_conf_req(buf: bytes) -> PrepareConfRequest:
    conf_at, key_at = fb.fields(buf, fb.root(buf), 2, "PrepareConf.Req")
    conf: list[tuple[str, str]] = []
    for index, (name, value) in enumerate(fb.read_entries(buf, conf_at, "PrepareConf.Req.conf", _CONF)
                                          if conf_at else ()):
        if value is None:
            raise ProtocolError(f"PrepareConf.Req.conf[{index}] ({name!r}) has no value")
        conf.append((name, value))
    key = fb.read_str(buf, key_at, "PrepareConf.Req.key") if key_at else None
    return PrepareConfRequest(conf, key)


_REQ_ARGS = "HTTPReqCall.Req.args"
_REQ_HEADERS = "HTTPReqCall.Req.headers"
_RESP_HEADERS = "HTTPRespCall.Req.headers"


def _read_http_req_call_req(buf: bytes, lazy: bool = False) -> HTTPReqCallRequest:
    id_at, src_ip_at, method_at, path_at, args_at, headers_at, token_at = fb.fields(
        buf, fb.root(buf), 7, "HTTPReqCall.Req"
    )
    method = _u8(buf, method_at)[0] if method_at else 0
    if method >= len(METHODS):
        raise ProtocolError(f"HTTPReqCall.Req.method: unknown method {method}")
    msg_id = _u32(buf, id_at)[0] if id_at else 0
    token = _u32(buf, token_at)[0] if token_at else 0
    if lazy:
        return LazyHTTPReqCallRequest(buf, msg_id, token, method, path_at, src_ip_at, args_at, headers_at)
    return HTTPReqCallRequest(
        msg_id, token, method, _read_path(buf, path_at), _read_src_ip(buf, src_ip_at),
        fb.read_entries(buf, args_at, _REQ_ARGS, _HTTP) if args_at else [],
        fb.read_entries(buf, headers_at, _REQ_HEADERS, _HTTP) if headers_at else [],
    )


def _read_extra_info_resp(buf: bytes) -> ExtraInfoResponse:
    (result_at,) = fb.fields(buf, fb.root(buf), 1, "ExtraInfo.Resp")
    return ExtraInfoResponse(fb.read_bytes(buf, result_at, "ExtraInfo.Resp.result") if result_at else None)


def read_extra_info_result(buf: bytes) -> Union[bytes, None]:
    """``ExtraInfo.Resp.result`` read straight from a payload, without building the message.

    What the runner does with every ExtraInfo answer (one to three per call), so it skips the
    dispatch of ``decode_to_runner``; malformed input raises ``ProtocolError`` the same way.
    """
    try:
        return _read_extra_info_resp(buf).result
    except struct.error as exc:
        raise ProtocolError(f"ExtraInfo.Resp: offset out of range ({exc})") from None


def _read_http_resp_call_req(buf: bytes, lazy: bool = False) -> HTTPRespCallRequest:
    id_at, status_at, headers_at, token_at = fb.fields(buf, fb.root(buf), 4, "HTTPRespCall.Req")
    msg_id = _u32(buf, id_at)[0] if id_at else 0
    token = _u32(buf, token_at)[0] if token_at else 0
    status = _u16(buf, status_at)[0] if status_at else 0
    if lazy:
        return LazyHTTPRespCallRequest(buf, msg_id, token, status, headers_at)
    return HTTPRespCallRequest(
        msg_id, token, status,
        fb.read_entries(buf, headers_at, _RESP_HEADERS, _HTTP) if headers_at else [],
    )


def _read_path(buf: bytes, pos: int) -> str:
    return fb.read_str(buf, pos, "HTTPReqCall.Req.path", _HTTP) if pos else ""


def _read_src_ip(buf: bytes, pos: int) -> bytes:
    return fb.read_bytes(buf, pos, "HTTPReqCall.Req.src_ip") if pos else b""


def _lazy_entries(buf: bytes, pos: int, where: str) -> list[Entry]:
    """The entries a lazy message defers; a malformed one raises ``ProtocolError`` on access."""
    if not pos:
        return []
    try:
        return fb.read_entries(buf, pos, where, _HTTP)
    except struct.error as exc:
        raise ProtocolError(f"{where}: offset out of range ({exc})") from None


def _lazy_field(where: str, read: Callable[[], _T]) -> _T:
    try:
        return read()
    except struct.error as exc:
        raise ProtocolError(f"{where}: offset out of range ({exc})") from None


_REQ_CALL_PATH = HTTPReqCallRequest.__dict__["path"]
_REQ_CALL_SRC_IP = HTTPReqCallRequest.__dict__["src_ip"]
_REQ_CALL_ARGS = HTTPReqCallRequest.__dict__["args"]
_REQ_CALL_HEADERS = HTTPReqCallRequest.__dict__["headers"]
_RESP_CALL_HEADERS = HTTPRespCallRequest.__dict__["headers"]


class LazyHTTPReqCallRequest(HTTPReqCallRequest):
    """An ``HTTPReqCallRequest`` whose path, source IP, args and headers are decoded on first
    access.

    Most plugins read a few headers or none, and decoding every entry eagerly was over half of
    the runner's time per call. The id, token and method are read (and checked) at decode time;
    anything malformed in the other fields raises ``ProtocolError`` when that field is first
    read. Equal to the eager message with the same values. Assigning a field stores the value.
    """

    __slots__ = ("_buf", "_path_at", "_src_ip_at", "_args_at", "_headers_at")

    def __init__(self, buf: bytes, msg_id: int, token: int, method: int, path_at: int,
                 src_ip_at: int, args_at: int, headers_at: int) -> None:
        self.id = msg_id
        self.conf_token = token
        self.method = method
        self._buf = buf
        self._path_at = path_at
        self._src_ip_at = src_ip_at
        self._args_at = args_at
        self._headers_at = headers_at

    @property
    def path(self) -> str:
        try:
            return _REQ_CALL_PATH.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            path = _lazy_field("HTTPReqCall.Req.path", lambda: _read_path(self._buf, self._path_at))
            _REQ_CALL_PATH.__set__(self, path)
            return path

    @path.setter
    def path(self, value: str) -> None:
        _REQ_CALL_PATH.__set__(self, value)

    @property
    def src_ip(self) -> bytes:
        try:
            return _REQ_CALL_SRC_IP.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            src_ip = _lazy_field("HTTPReqCall.Req.src_ip", lambda: _read_src_ip(self._buf, self._src_ip_at))
            _REQ_CALL_SRC_IP.__set__(self, src_ip)
            return src_ip

    @src_ip.setter
    def src_ip(self, value: bytes) -> None:
        _REQ_CALL_SRC_IP.__set__(self, value)

    @property
    def args(self) -> list[Entry]:
        try:
            return _REQ_CALL_ARGS.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            args = _lazy_entries(self._buf, self._args_at, _REQ_ARGS)
            _REQ_CALL_ARGS.__set__(self, args)
            return args

    @args.setter
    def args(self, value: list[Entry]) -> None:
        _REQ_CALL_ARGS.__set__(self, value)

    @property
    def headers(self) -> list[Entry]:
        try:
            return _REQ_CALL_HEADERS.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            headers = _lazy_entries(self._buf, self._headers_at, _REQ_HEADERS)
            _REQ_CALL_HEADERS.__set__(self, headers)
            return headers

    @headers.setter
    def headers(self, value: list[Entry]) -> None:
        _REQ_CALL_HEADERS.__set__(self, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HTTPReqCallRequest):
            return NotImplemented
        return (self.id, self.conf_token, self.method, self.path, self.src_ip, self.args,
                self.headers) == (other.id, other.conf_token, other.method, other.path,
                                  other.src_ip, other.args, other.headers)


class LazyHTTPRespCallRequest(HTTPRespCallRequest):
    """An ``HTTPRespCallRequest`` whose headers are decoded on first access (see above)."""

    __slots__ = ("_buf", "_headers_at")

    def __init__(self, buf: bytes, msg_id: int, token: int, status: int, headers_at: int) -> None:
        self.id = msg_id
        self.conf_token = token
        self.status = status
        self._buf = buf
        self._headers_at = headers_at

    @property
    def headers(self) -> list[Entry]:
        try:
            return _RESP_CALL_HEADERS.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            headers = _lazy_entries(self._buf, self._headers_at, _RESP_HEADERS)
            _RESP_CALL_HEADERS.__set__(self, headers)
            return headers

    @headers.setter
    def headers(self, value: list[Entry]) -> None:
        _RESP_CALL_HEADERS.__set__(self, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HTTPRespCallRequest):
            return NotImplemented
        return (self.id, self.conf_token, self.status, self.headers) == (
            other.id, other.conf_token, other.status, other.headers)


_TO_RUNNER: dict[int, tuple[str, Callable[[bytes, bool], ToRunner]]] = {
    MessageType.PREPARE_CONF: ("PrepareConf.Req", lambda buf, lazy: _read_prepare_conf_req(buf)),
    MessageType.HTTP_REQ_CALL: ("HTTPReqCall.Req", _read_http_req_call_req),
    MessageType.EXTRA_INFO: ("ExtraInfo.Resp", lambda buf, lazy: _read_extra_info_resp(buf)),
    MessageType.HTTP_RESP_CALL: ("HTTPRespCall.Req", _read_http_resp_call_req),
}


def decode_to_runner(msg_type: int, payload: Union[bytes, memoryview], lazy: bool = False) -> ToRunner:
    """Decode a payload the gateway sent; anything malformed raises ``ProtocolError``.

    With ``lazy`` (what the runner uses), the header and argument lists of the two call
    messages are decoded when first read (``LazyHTTPReqCallRequest``); a malformed entry then
    raises ``ProtocolError`` at that point instead of here.
    """
    entry = _TO_RUNNER.get(msg_type)
    if entry is None:
        raise ProtocolError(f"message type {msg_type} is never sent to a runner")
    name, read = entry
    buf = payload if type(payload) is bytes else bytes(payload)
    try:
        return read(buf, lazy)
    except struct.error as exc:
        raise ProtocolError(f"{name}: offset out of range ({exc})") from None


def _write_prepare_conf_req(msg: PrepareConfRequest) -> bytes:
    key = fb.str_child(msg.key) if msg.key is not None else None
    return fb.frame(MessageType.PREPARE_CONF, _PREPARE_CONF_REQ.build((_entries(msg.conf), key)))


def _write_http_req_call_req(msg: HTTPReqCallRequest) -> bytes:
    return fb.frame(MessageType.HTTP_REQ_CALL, _HTTP_REQ_CALL_REQ.build((
        msg.id,
        fb.bytes_child(msg.src_ip) if msg.src_ip else None,
        msg.method,
        fb.str_child(msg.path),
        _entries(msg.args),
        _entries(msg.headers),
        msg.conf_token,
    )))


def _write_extra_info_resp(msg: ExtraInfoResponse) -> bytes:
    result = fb.bytes_child(msg.result) if msg.result is not None else None
    return fb.frame(MessageType.EXTRA_INFO, _EXTRA_INFO_RESP.build((result,)))


def _write_http_resp_call_req(msg: HTTPRespCallRequest) -> bytes:
    return fb.frame(MessageType.HTTP_RESP_CALL, _HTTP_RESP_CALL_REQ.build(
        (msg.id, msg.status, _entries(msg.headers), msg.conf_token)
    ))


_ENCODE_TO_RUNNER: dict[type, Callable[[ToRunner], bytes]] = {
    PrepareConfRequest: _write_prepare_conf_req,  # type: ignore[dict-item]
    HTTPReqCallRequest: _write_http_req_call_req,  # type: ignore[dict-item]
    ExtraInfoResponse: _write_extra_info_resp,  # type: ignore[dict-item]
    HTTPRespCallRequest: _write_http_resp_call_req,  # type: ignore[dict-item]
}


def encode_to_runner(msg: ToRunner) -> bytes:
    """The whole frame for a gateway -> runner message (used by the gateway-side test kit)."""
    return _ENCODE_TO_RUNNER[type(msg)](msg)


# --- runner -> gateway ---------------------------------------------------------------------


def _write_error(msg: ErrorResponse) -> bytes:
    return _ERROR_FRAMES[msg.code]


def _write_prepare_conf_resp(msg: PrepareConfResponse) -> bytes:
    return fb.frame(MessageType.PREPARE_CONF, _PREPARE_CONF_RESP.build((msg.conf_token,)))


def _action(action: Union[Stop, Rewrite]) -> tuple[int, fb.Child]:
    if type(action) is Rewrite:
        return _ACTION_REWRITE, _REWRITE.build((
            fb.str_child(action.path) if action.path is not None else None,
            _entries(action.headers),
            _entries(action.args),
            _entries(action.resp_headers),
            fb.bytes_child(action.body) if action.body is not None else None,
        ))
    if type(action) is Stop:
        return _ACTION_STOP, _STOP.build((
            action.status,
            _entries(action.headers),
            fb.bytes_child(action.body) if action.body else None,
        ))
    raise TypeError(f"not an HTTPReqCall action: {action!r}")


def _write_http_req_call_resp(msg: HTTPReqCallResponse) -> bytes:
    if msg.action is None:
        return _NO_ACTION_HEAD + _pack_u32(msg.id)
    action_type, action = _action(msg.action)
    return fb.frame(MessageType.HTTP_REQ_CALL, _HTTP_REQ_CALL_RESP.build((msg.id, action_type, action)))


def _write_extra_info_req(msg: ExtraInfoRequest) -> bytes:
    info = msg.info
    if type(info) is Var:
        frame = _VAR_FRAMES.get(info.name)
        if frame is None:
            frame = fb.frame(MessageType.EXTRA_INFO, _EXTRA_INFO_REQ.build(
                (_INFO_VAR, _VAR.build((fb.str_child(info.name),)))
            ))
            if len(_VAR_FRAMES) < _VAR_FRAMES_MAX:
                _VAR_FRAMES[info.name] = frame
        return frame
    frame = _INFO_FRAMES.get(type(info))
    if frame is None:
        raise TypeError(f"not an ExtraInfo question: {info!r}")
    return frame


def _write_http_resp_call_resp(msg: HTTPRespCallResponse) -> bytes:
    return fb.frame(MessageType.HTTP_RESP_CALL, _HTTP_RESP_CALL_RESP.build((
        msg.id,
        msg.status,
        _entries(msg.headers),
        fb.bytes_child(msg.body) if msg.body else None,
    )))


_ERROR_FRAMES = {code: fb.frame(MessageType.ERROR, _ERR_RESP.build((code,))) for code in ErrorCode}
_INFO_FRAMES: dict[type, bytes] = {
    kind: fb.frame(MessageType.EXTRA_INFO, _EXTRA_INFO_REQ.build((number, _EMPTY.build(()))))
    for kind, number in ((ReqBody, _INFO_REQ_BODY), (RespBody, _INFO_RESP_BODY))
}
# Plugins ask for the same few variables on every request: their questions are cached frames
# (bounded, in case a plugin builds names from request data).
_VAR_FRAMES: dict[str, bytes] = {}
_VAR_FRAMES_MAX = 256
# "No action" is the most common answer: a 3-field table with only the id set, whose id is
# the last 4 bytes of the frame, so the answer is a constant prefix plus the packed id.
_NO_ACTION_HEAD = fb.frame(MessageType.HTTP_REQ_CALL, fb.TableWriter("I").build((0,)))[:-4]

_ENCODE_TO_GATEWAY: dict[type, Callable[[ToGateway], bytes]] = {
    ErrorResponse: _write_error,  # type: ignore[dict-item]
    PrepareConfResponse: _write_prepare_conf_resp,  # type: ignore[dict-item]
    HTTPReqCallResponse: _write_http_req_call_resp,  # type: ignore[dict-item]
    ExtraInfoRequest: _write_extra_info_req,  # type: ignore[dict-item]
    HTTPRespCallResponse: _write_http_resp_call_resp,  # type: ignore[dict-item]
}


def encode_to_gateway(msg: ToGateway) -> bytes:
    """The whole frame for a runner -> gateway message; ``FrameTooLarge`` over the size limit.

    Strings are encoded with ``surrogateescape`` (see the module docstring); text that cannot
    be encoded at all (a lone surrogate outside that range) raises ``UnicodeEncodeError``.
    """
    return _ENCODE_TO_GATEWAY[type(msg)](msg)


def _read_err_resp(buf: bytes) -> ErrorResponse:
    (code_at,) = fb.fields(buf, fb.root(buf), 1, "Err.Resp")
    code = _u8(buf, code_at)[0] if code_at else 0
    if code >= len(ErrorCode):
        raise ProtocolError(f"Err.Resp.code: unknown code {code}")
    return ErrorResponse(ErrorCode(code))


def _read_prepare_conf_resp(buf: bytes) -> PrepareConfResponse:
    (token_at,) = fb.fields(buf, fb.root(buf), 1, "PrepareConf.Resp")
    return PrepareConfResponse(_u32(buf, token_at)[0] if token_at else 0)


def _read_action(buf: bytes, action_type: int, table: int) -> Union[Stop, Rewrite]:
    if action_type == _ACTION_STOP:
        status_at, headers_at, body_at = fb.fields(buf, table, 3, "HTTPReqCall.Stop")
        return Stop(
            _u16(buf, status_at)[0] if status_at else 0,
            fb.read_entries(buf, headers_at, "HTTPReqCall.Stop.headers", _HTTP) if headers_at else [],
            fb.read_bytes(buf, body_at, "HTTPReqCall.Stop.body") if body_at else b"",
        )
    path_at, headers_at, args_at, resp_headers_at, body_at = fb.fields(buf, table, 5, "HTTPReqCall.Rewrite")
    return Rewrite(
        fb.read_str(buf, path_at, "HTTPReqCall.Rewrite.path", _HTTP) if path_at else None,
        fb.read_entries(buf, headers_at, "HTTPReqCall.Rewrite.headers", _HTTP) if headers_at else [],
        fb.read_entries(buf, args_at, "HTTPReqCall.Rewrite.args", _HTTP) if args_at else [],
        fb.read_entries(buf, resp_headers_at, "HTTPReqCall.Rewrite.resp_headers", _HTTP)
        if resp_headers_at else [],
        fb.read_bytes(buf, body_at, "HTTPReqCall.Rewrite.body") if body_at else None,
    )


def _read_http_req_call_resp(buf: bytes) -> HTTPReqCallResponse:
    id_at, type_at, action_at = fb.fields(buf, fb.root(buf), 3, "HTTPReqCall.Resp")
    msg_id = _u32(buf, id_at)[0] if id_at else 0
    action_type = _u8(buf, type_at)[0] if type_at else _ACTION_NONE
    if action_type == _ACTION_NONE:
        return HTTPReqCallResponse(msg_id)
    if action_type > _ACTION_REWRITE:
        raise ProtocolError(f"HTTPReqCall.Resp.action_type: unknown action {action_type}")
    if not action_at:
        raise ProtocolError(f"HTTPReqCall.Resp: action_type {action_type} without an action")
    return HTTPReqCallResponse(msg_id, _read_action(buf, action_type, fb.table_at(buf, action_at)))


def _read_extra_info_req(buf: bytes) -> ExtraInfoRequest:
    type_at, info_at = fb.fields(buf, fb.root(buf), 2, "ExtraInfo.Req")
    info_type = _u8(buf, type_at)[0] if type_at else 0
    info: Info
    if info_type == _INFO_VAR:
        if not info_at:
            raise ProtocolError("ExtraInfo.Req: Var without its table")
        (name_at,) = fb.fields(buf, fb.table_at(buf, info_at), 1, "ExtraInfo.Var")
        if not name_at:
            raise ProtocolError("ExtraInfo.Var: no name")
        info = Var(fb.read_str(buf, name_at, "ExtraInfo.Var.name"))
    elif info_type == _INFO_REQ_BODY:
        info = ReqBody()
    elif info_type == _INFO_RESP_BODY:
        info = RespBody()
    else:
        raise ProtocolError(f"ExtraInfo.Req.info_type: unknown info type {info_type}")
    return ExtraInfoRequest(info)


def _read_http_resp_call_resp(buf: bytes) -> HTTPRespCallResponse:
    id_at, status_at, headers_at, body_at = fb.fields(buf, fb.root(buf), 4, "HTTPRespCall.Resp")
    return HTTPRespCallResponse(
        _u32(buf, id_at)[0] if id_at else 0,
        _u16(buf, status_at)[0] if status_at else 0,
        fb.read_entries(buf, headers_at, "HTTPRespCall.Resp.headers", _HTTP) if headers_at else [],
        fb.read_bytes(buf, body_at, "HTTPRespCall.Resp.body") if body_at else b"",
    )


_TO_GATEWAY: dict[int, tuple[str, Callable[[bytes], ToGateway]]] = {
    MessageType.ERROR: ("Err.Resp", _read_err_resp),
    MessageType.PREPARE_CONF: ("PrepareConf.Resp", _read_prepare_conf_resp),
    MessageType.HTTP_REQ_CALL: ("HTTPReqCall.Resp", _read_http_req_call_resp),
    MessageType.EXTRA_INFO: ("ExtraInfo.Req", _read_extra_info_req),
    MessageType.HTTP_RESP_CALL: ("HTTPRespCall.Resp", _read_http_resp_call_resp),
}


def decode_to_gateway(msg_type: int, payload: Union[bytes, memoryview]) -> ToGateway:
    """Decode a payload a runner sent (gateway side); anything malformed raises ``ProtocolError``."""
    entry = _TO_GATEWAY.get(msg_type)
    if entry is None:
        raise ProtocolError(f"message type {msg_type} is never sent to a gateway")
    name, read = entry
    buf = payload if type(payload) is bytes else bytes(payload)
    try:
        return read(buf)
    except struct.error as exc:
        raise ProtocolError(f"{name}: offset out of range ({exc})") from None
