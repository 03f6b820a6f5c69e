"""Typed messages of the APISIX ext-plugin protocol (schema ext-plugin-proto 0.6.1).

One class per table that crosses the wire, in both directions, so that the runner and the
gateway-side test kit share one vocabulary. Entries (headers, args) are plain tuples
``(name, value)``; ``value`` is ``None`` when the wire entry has no value (a flag argument, or a
deletion in a Rewrite). Bodies are ``bytes`` end to end: text is decoded only where a plugin asks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional, Union

Entry = tuple[str, Optional[str]]
"""A ``TextEntry``: ``(name, value)``; ``value is None`` when the field is absent on the wire."""


class MessageType(enum.IntEnum):
    """The type byte of a frame (the same number names the request and its answer)."""

    ERROR = 0
    PREPARE_CONF = 1
    HTTP_REQ_CALL = 2
    EXTRA_INFO = 3
    HTTP_RESP_CALL = 4


class ErrorCode(enum.IntEnum):
    """``A6.Err.Code``."""

    BAD_REQUEST = 0
    SERVICE_UNAVAILABLE = 1
    CONF_TOKEN_NOT_FOUND = 2


METHODS: tuple[str, ...] = (
    "GET", "HEAD", "POST", "PUT", "DELETE", "MKCOL", "COPY", "MOVE", "OPTIONS",
    "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE",
)
"""``A6.Method``: the index is the wire value."""


# --- gateway -> runner -------------------------------------------------------------------------


@dataclass(slots=True)
class PrepareConfRequest:
    """``A6.PrepareConf.Req``: plugin name -> JSON conf string, in execution order."""

    conf: list[tuple[str, str]]
    key: Optional[str] = None


@dataclass(slots=True)
class HTTPReqCallRequest:
    """``A6.HTTPReqCall.Req``. ``method`` is the wire enum value (see ``METHODS``)."""

    id: int
    conf_token: int
    method: int = 0
    path: str = ""
    src_ip: bytes = b""
    args: list[Entry] = field(default_factory=list)
    headers: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class ExtraInfoResponse:
    """``A6.ExtraInfo.Resp``: ``result`` is ``None`` when the gateway has no value."""

    result: Optional[bytes]


@dataclass(slots=True)
class HTTPRespCallRequest:
    """``A6.HTTPRespCall.Req``: the upstream's status and headers (the body is asked for)."""

    id: int
    conf_token: int
    status: int = 0
    headers: list[Entry] = field(default_factory=list)


# --- runner -> gateway -------------------------------------------------------------------------


@dataclass(slots=True)
class PrepareConfResponse:
    """``A6.PrepareConf.Resp``."""

    conf_token: int


@dataclass(slots=True)
class Stop:
    """``A6.HTTPReqCall.Stop``: answer the client now. Status 0 means 200 to the gateway."""

    status: int = 0
    headers: list[Entry] = field(default_factory=list)
    body: bytes = b""


@dataclass(slots=True)
class Rewrite:
    """``A6.HTTPReqCall.Rewrite``: only the parts that are set are encoded."""

    path: Optional[str] = None
    headers: list[Entry] = field(default_factory=list)
    args: list[Entry] = field(default_factory=list)
    resp_headers: list[Entry] = field(default_factory=list)
    body: Optional[bytes] = None


Action = Union[Stop, Rewrite, None]


@dataclass(slots=True)
class HTTPReqCallResponse:
    """``A6.HTTPReqCall.Resp``; ``action is None`` is "no action": continue unchanged."""

    id: int
    action: Action = None


@dataclass(frozen=True, slots=True)
class Var:
    """``A6.ExtraInfo.Var``: ask for one nginx / gateway variable."""

    name: str


@dataclass(frozen=True, slots=True)
class ReqBody:
    """``A6.ExtraInfo.ReqBody``: ask for the whole request body."""


@dataclass(frozen=True, slots=True)
class RespBody:
    """``A6.ExtraInfo.RespBody``: ask for the whole upstream body (response phase only)."""


Info = Union[Var, ReqBody, RespBody]


@dataclass(slots=True)
class ExtraInfoRequest:
    """``A6.ExtraInfo.Req``."""

    info: Info


@dataclass(slots=True)
class HTTPRespCallResponse:
    """``A6.HTTPRespCall.Resp``: empty ``headers`` keeps the upstream's; empty ``body`` too."""

    id: int
    status: int = 0
    headers: list[Entry] = field(default_factory=list)
    body: bytes = b""


@dataclass(slots=True)
class ErrorResponse:
    """``A6.Err.Resp``, always sent with type byte 0."""

    code: ErrorCode


ToRunner = Union[PrepareConfRequest, HTTPReqCallRequest, ExtraInfoResponse, HTTPRespCallRequest]
ToGateway = Union[
    PrepareConfResponse, HTTPReqCallResponse, ExtraInfoRequest, HTTPRespCallResponse, ErrorResponse
]
