"""What a plugin author sees: the plugin base class and the request and response views.

The shape follows the APISIX Go runner (name, conf parsed once, a request filter, a response
filter): the conf is parsed when the gateway sends PrepareConf, never per request, and a filter
either changes the request (only the changes go back to the gateway) or returns a ``Stop``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, Optional, TypeVar, Union

import orjson

from .http import Args, Headers
from .protocol import messages as m

ConfT = TypeVar("ConfT")

Ask = Callable[[m.Info], Awaitable[Optional[bytes]]]
"""Sends one ExtraInfo question on the call's connection and waits for the gateway's answer."""

HeaderInput = Union[Mapping[str, str], Iterable[tuple[str, str]]]

# The gateway copies these from neither a Stop nor a response rewrite the way a plugin would
# expect (it recomputes framing itself), so they are never sent back.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


class ConfError(ValueError):
    """Raised by ``Plugin.parse_conf`` for a conf the plugin refuses; the message is logged."""


class Stop:
    """Returned by a request filter to answer the client now and end the plugin chain."""

    __slots__ = ("status", "headers", "body")

    def __init__(
        self, status: int = 200, headers: HeaderInput = (), body: Union[bytes, str] = b""
    ) -> None:
        self.status = status
        items = headers.items() if isinstance(headers, Mapping) else headers
        self.headers: list[tuple[str, str]] = [(k.lower(), v) for k, v in items]
        self.body = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body

    @classmethod
    def json(cls, status: int, payload: Any, headers: HeaderInput = ()) -> "Stop":
        """A JSON answer with its ``content-type`` set."""
        stop = cls(status, headers, orjson.dumps(payload))
        if not any(k == "content-type" for k, _ in stop.headers):
            stop.headers.insert(0, ("content-type", "application/json"))
        return stop

    def to_message(self) -> m.Stop:
        return m.Stop(self.status, list(self.headers), self.body)


class _Exchange:
    """What both views share: the body and variables, asked of the gateway once per call.

    ``body()`` and ``var()`` cost one ExtraInfo round trip each on first use and are cached for
    the rest of the call; ``prime`` fills the caches with answers the runner fetched ahead.
    """

    __slots__ = ("_call", "_ask", "_body", "_new_body", "_vars")

    #: The ExtraInfo question for this phase's body.
    _BODY_QUESTION: ClassVar[m.Info]

    def __init__(self, call: Union[m.HTTPReqCallRequest, m.HTTPRespCallRequest], ask: Ask) -> None:
        self._call = call
        self._ask = ask
        self._body: Optional[bytes] = None
        self._new_body: Optional[bytes] = None
        self._vars: dict[str, Optional[str]] = {}

    @property
    def id(self) -> int:
        """The gateway's call id (for logs; recycled, and 0 is a normal id)."""
        return self._call.id

    @property
    def conf_token(self) -> int:
        return self._call.conf_token

    async def body(self) -> bytes:
        """This phase's body: the client's request, or the upstream's whole answer (``b""`` if
        there is none)."""
        if self._body is None:
            self._body = await self._ask(self._BODY_QUESTION) or b""
        return self._body

    async def text(self) -> str:
        """The body decoded as UTF-8 (raises ``UnicodeDecodeError`` on invalid bytes)."""
        return (await self.body()).decode("utf-8")

    async def var(self, name: str) -> Optional[str]:
        """An nginx / gateway variable (``None`` when empty or unknown)."""
        if name in self._vars:
            return self._vars[name]
        raw = await self._ask(m.Var(name))
        value = None if raw is None else raw.decode("utf-8", "replace")
        self._vars[name] = value
        return value

    def set_body(self, body: Union[bytes, str]) -> None:
        """Replace the body: sent upstream in the request phase (the gateway recomputes
        Content-Length), to the client in the response phase (set ``content-type`` too)."""
        data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
        if not data:
            raise ValueError("the gateway cannot send an empty replacement body")
        self._new_body = data

    def prime(self, body: Optional[bytes], variables: Mapping[str, Optional[str]]) -> None:
        """Fill the caches with answers the runner fetched ahead of the filters."""
        if body is not None:
            self._body = body
        self._vars.update(variables)


class Request(_Exchange):
    """The request as the gateway described it, plus the changes a plugin makes to it.

    Headers, args and the source IP are decoded on first use, not per call, because most plugins
    look at only a few of them. ``body()`` and ``var()`` ask the gateway (one ExtraInfo round trip
    each) and cache the answer for the rest of the call.
    """

    __slots__ = ("_headers", "_args", "_resp_headers", "_path")

    _BODY_QUESTION = m.ReqBody()
    _call: m.HTTPReqCallRequest

    def __init__(self, call: m.HTTPReqCallRequest, ask: Ask) -> None:
        super().__init__(call, ask)
        self._headers: Optional[Headers] = None
        self._args: Optional[Args] = None
        self._resp_headers: Optional[Headers] = None
        self._path: Optional[str] = None

    @property
    def method(self) -> str:
        method = self._call.method
        return m.METHODS[method] if 0 <= method < len(m.METHODS) else str(method)

    @property
    def src_ip(self) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address, None]:
        raw = self._call.src_ip
        if len(raw) == 4:
            return ipaddress.IPv4Address(raw)
        if len(raw) == 16:
            return ipaddress.IPv6Address(raw)
        return None

    @property
    def path(self) -> str:
        return self._call.path if self._path is None else self._path

    @path.setter
    def path(self, value: str) -> None:
        self._path = value

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            # Decoded on first read, not on first write: a plugin that only sets headers never
            # decodes the gateway's (see ``MultiDict.lazy``).
            call = self._call
            self._headers = Headers.lazy(lambda: call.headers)
        return self._headers

    @property
    def args(self) -> Args:
        if self._args is None:
            self._args = Args(self._call.args)
        return self._args

    @property
    def resp_headers(self) -> Headers:
        """Headers to set on the client's eventual response (some names the gateway ignores)."""
        if self._resp_headers is None:
            self._resp_headers = Headers()
        return self._resp_headers

    def to_action(self) -> m.Action:
        """The Rewrite holding exactly what changed, or ``None`` when nothing did."""
        headers: list[m.Entry] = []
        if self._headers is not None and self._headers.changed:
            for name in self._headers.touched():
                present = [v for v in self._headers.getall(name) if v is not None]
                # The gateway *sets* each Rewrite header, so several values travel as one
                # comma-joined value (RFC 9110 5.3); none left means delete.
                headers.append((name, ", ".join(present) if present else None))
        args: list[m.Entry] = []
        if self._args is not None and self._args.changed:
            for name in self._args.touched():
                values = self._args.getall(name)
                if values:
                    # A repeated name accumulates at the gateway; a value-less flag cannot be
                    # expressed in a Rewrite (no value means delete), so it becomes "".
                    args.extend((name, "" if v is None else v) for v in values)
                else:
                    args.append((name, None))
        resp_headers: list[m.Entry] = []
        if self._resp_headers is not None:
            resp_headers = list(self._resp_headers.multi_items())
        path = self._path if self._path is not None and self._path != self._call.path else None
        if path is None and not headers and not args and not resp_headers and self._new_body is None:
            return None
        return m.Rewrite(path, headers, args, resp_headers, self._new_body)


class Response(_Exchange):
    """The upstream's answer, as the response filters see and change it.

    The gateway either keeps the upstream headers (when the answer names none) or sets exactly
    the headers it is given, so once a filter changes a header or the body, the whole header
    list is sent back, minus framing headers the gateway computes itself.
    """

    __slots__ = ("_headers", "_status")

    _BODY_QUESTION = m.RespBody()
    _call: m.HTTPRespCallRequest

    def __init__(self, call: m.HTTPRespCallRequest, ask: Ask) -> None:
        super().__init__(call, ask)
        self._headers: Optional[Headers] = None
        self._status: Optional[int] = None

    @property
    def status(self) -> int:
        """The status the client will get (the upstream's until a filter sets another)."""
        return self._call.status if self._status is None else self._status

    @status.setter
    def status(self, value: int) -> None:
        if not 100 <= value <= 599:
            raise ValueError(f"HTTP status out of range: {value}")
        self._status = value

    @property
    def upstream_status(self) -> int:
        return self._call.status

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self._call.headers)
        return self._headers

    def to_message(self) -> m.HTTPRespCallResponse:
        status = 0 if self._status is None else self._status
        headers: list[m.Entry] = []
        if self._new_body is not None or (self._headers is not None and self._headers.changed):
            headers = [
                (k, v) for k, v in self.headers.multi_items()
                if v is not None and k not in _FRAMING_HEADERS
            ]
        return m.HTTPRespCallResponse(self._call.id, status, headers, self._new_body or b"")


class Plugin(Generic[ConfT]):
    """Base class of a runner plugin. Subclass it, set ``name`` and override what you need.

    One instance serves every route: per-route state belongs in the parsed conf, which
    ``parse_conf`` builds once when the gateway sends the conf, and which both filters receive.
    """

    name: ClassVar[str] = ""
    #: JSON Schema of the conf, shown by ``apisix-openai-triton plugins`` (documentation only).
    conf_schema: ClassVar[Optional[Mapping[str, Any]]] = None
    #: Ask the gateway for these before the filters of a phase run, back to back (one wait, not
    #: one per question). ``prefetch_body`` is the body of that phase: the request body before
    #: ``request_filter``, the upstream body before ``response_filter``. Only phases whose
    #: filter the plugin overrides are prefetched.
    prefetch_body: ClassVar[bool] = False
    prefetch_vars: ClassVar[tuple[str, ...]] = ()

    def parse_conf(self, raw: str) -> ConfT:
        """Turn the route's conf string into what the filters use; raise ``ConfError`` if bad.

        The default accepts any JSON value (an empty string is ``None``).
        """
        if not raw.strip():
            return None  # type: ignore[return-value]
        try:
            return orjson.loads(raw)  # type: ignore[no-any-return]
        except orjson.JSONDecodeError as exc:
            raise ConfError(f"conf is not valid JSON: {exc}") from None

    async def request_filter(self, conf: ConfT, request: Request) -> Optional[Stop]:
        """Change ``request`` in place, or return a ``Stop`` to answer the client now."""
        return None

    async def response_filter(self, conf: ConfT, response: Response) -> None:
        """Change ``response`` in place (status, headers, body)."""
        return None
