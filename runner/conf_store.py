"""Route confs the gateway prepared, parsed once, looked up by token on every call.

Tokens. The gateway keeps a token for up to ``APISIX_CONF_EXPIRE_TIME`` seconds and keeps using
it across a runner restart, so a token handed out by this instance must never mean something else
to a previous instance, nor to a sibling worker process. ``TokenMinter`` therefore starts at a
random 32-bit point per runner instance and steps by the number of workers: worker ``i`` of ``n``
mints ``start + i + k*n`` (mod 2**32, 0 skipped because it is the FlatBuffers default). Workers
are disjoint by construction, without coordination; two instances collide only if their short
runs of tokens overlap in a 2**32 space.

Expiry. A conf lives ``1.2 x APISIX_CONF_EXPIRE_TIME`` after its last use (the gateway re-sends
PrepareConf after that time; there is no "conf removed" message). A hit only flips a flag on the
entry; the periodic ``sweep`` turns flags into timestamps and drops what is idle for too long.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from .plugin import Plugin, Request, Response, Stop
from .protocol import messages as m
from .protocol.codec import encode_to_gateway
from .registry import PluginRegistry

log = logging.getLogger("apisix_openai_triton.runner.conf")

RawConf = tuple[tuple[str, str], ...]
RequestFilter = Callable[[Any, Request], Awaitable[Optional[Stop]]]
ResponseFilter = Callable[[Any, Response], Awaitable[None]]
MissHook = Callable[[int], Awaitable[Optional[tuple[RawConf, Optional[str]]]]]
"""Asked for a token this process does not hold; returns that token's raw conf and key, if any."""
PrepareHook = Callable[[int, RawConf, Optional[str]], None]
"""Told about every token this process mints (so a worker layer can share it)."""

_UINT32 = 1 << 32


class TokenMinter:
    """Mints uint32 conf tokens: ``start + index + k*stride`` (mod 2**32), never 0."""

    __slots__ = ("_next", "_stride")

    def __init__(self, start: int, index: int = 0, stride: int = 1) -> None:
        if stride < 1 or not 0 <= index < stride:
            raise ValueError(f"worker index {index} out of range for {stride} workers")
        self._next = (start + index) % _UINT32
        self._stride = stride

    @classmethod
    def random_start(cls) -> int:
        """An unpredictable starting point for a new runner instance (shared by its workers)."""
        return secrets.randbits(32)

    def mint(self) -> int:
        token = self._next
        self._next = (token + self._stride) % _UINT32
        if token == 0:
            return self.mint()
        return token


class ConfRejected(Exception):
    """A PrepareConf the runner refuses (answered BAD_REQUEST); the message names the reason."""


@dataclass(frozen=True, slots=True)
class Prefetch:
    """ExtraInfo questions asked back to back before a phase's filters run.

    ``frames`` is the questions already encoded (built once per conf); the answers come back
    in order: the body first when ``body`` is set, then one per name in ``var_names``.
    """

    frames: bytes
    body: bool
    var_names: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.var_names) + (1 if self.body else 0)

    @classmethod
    def build(cls, body: Optional[m.Info], var_names: Sequence[str]) -> Optional["Prefetch"]:
        """The questions for one phase: ``body`` is ``ReqBody()``/``RespBody()`` or ``None``."""
        names = tuple(dict.fromkeys(var_names))
        if body is None and not names:
            return None
        questions: list[m.Info] = [body] if body is not None else []
        questions.extend(m.Var(n) for n in names)
        frames = b"".join(encode_to_gateway(m.ExtraInfoRequest(info)) for info in questions)
        return cls(frames, body is not None, names)


@dataclass(eq=False, slots=True)
class PreparedConf:
    """One route conf, parsed, with everything a call needs precomputed."""

    token: int
    raw: RawConf
    key: Optional[str]
    #: (plugin name, bound request filter, parsed conf) for plugins that override the filter
    request_chain: tuple[tuple[str, RequestFilter, Any], ...]
    response_chain: tuple[tuple[str, ResponseFilter, Any], ...]
    request_prefetch: Optional[Prefetch]
    response_prefetch: Optional[Prefetch]
    used: bool = False
    last_used: float = field(default=0.0)


def _overrides(plugin: Plugin[Any], method: str) -> bool:
    return getattr(type(plugin), method) is not getattr(Plugin, method)


MAX_CONFS = 65_536
"""A gateway holds one conf per route and ext-plugin (hundreds, rarely thousands), but any local
process that can reach the socket can send PrepareConf: the store is capped so that such a peer
cannot grow it without bound until entries expire. Dropping a conf is safe: the gateway's next
call with its token gets CONF_TOKEN_NOT_FOUND and the gateway sends the conf again."""


class ConfStore:
    """Token -> ``PreparedConf``, with expiry after last use and optional dedup by key."""

    def __init__(
        self,
        registry: PluginRegistry,
        *,
        expire_time: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        minter: Optional[TokenMinter] = None,
        on_miss: Optional[MissHook] = None,
        on_prepare: Optional[PrepareHook] = None,
        dedup_by_key: bool = True,
        max_confs: int = MAX_CONFS,
    ) -> None:
        self.registry = registry
        #: over this many confs, the oldest installed is dropped (see ``MAX_CONFS``)
        self.max_confs = max_confs
        #: entries idle this long are dropped (1.2 x the gateway's token cache time)
        self.ttl = 1.2 * expire_time
        self.clock = clock
        #: replaced by a worker layer after fork: ``TokenMinter(start, index, workers)``
        self.minter = minter or TokenMinter(TokenMinter.random_start())
        self.on_miss = on_miss
        self.on_prepare = on_prepare
        self._dedup = dedup_by_key
        self._entries: dict[int, PreparedConf] = {}
        self._by_key: dict[str, int] = {}
        self._warned_full = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: int) -> Optional[PreparedConf]:
        """The conf for ``token`` (marks it used), or ``None``: the hot path, kept minimal."""
        entry = self._entries.get(token)
        if entry is not None:
            entry.used = True
        return entry

    async def recover(self, token: int) -> Optional[PreparedConf]:
        """Ask ``on_miss`` (another worker's store) for a token this process does not hold."""
        if self.on_miss is None:
            return None
        found = await self.on_miss(token)
        if found is None:
            return None
        raw, key = found
        try:
            entry = self._build(token, raw, key)
        except ConfRejected as exc:
            log.warning("conf token %d from another worker rejected here: %s", token, exc)
            return None
        self._install(entry)
        return entry

    def prepare(self, conf: Sequence[tuple[str, str]], key: Optional[str] = None) -> int:
        """Parse a PrepareConf once and return its token; raises ``ConfRejected``."""
        raw: RawConf = tuple(conf)
        if self._dedup and key:
            token = self._by_key.get(key)
            if token is not None:
                entry = self._entries.get(token)
                if entry is not None and entry.raw == raw:
                    entry.used = True
                    return token
        entry = self._build(self.minter.mint(), raw, key)
        self._install(entry)
        if self.on_prepare is not None:
            self.on_prepare(entry.token, raw, key)
        return entry.token

    def sweep(self) -> int:
        """Refresh used entries and drop those idle longer than ``ttl``; returns how many."""
        now = self.clock()
        dead: list[int] = []
        for token, entry in self._entries.items():
            if entry.used:
                entry.used = False
                entry.last_used = now
            elif now - entry.last_used > self.ttl:
                dead.append(token)
        for token in dead:
            entry = self._entries.pop(token)
            if entry.key is not None and self._by_key.get(entry.key) == token:
                del self._by_key[entry.key]
        return len(dead)

    def _install(self, entry: PreparedConf) -> None:
        entry.last_used = self.clock()
        self._entries[entry.token] = entry
        if self._dedup and entry.key:
            self._by_key[entry.key] = entry.token
        if len(self._entries) > self.max_confs:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Drop the conf installed first (dicts keep insertion order: O(1), no heap per call)."""
        token = next(iter(self._entries))
        entry = self._entries.pop(token)
        if entry.key is not None and self._by_key.get(entry.key) == token:
            del self._by_key[entry.key]
        if not self._warned_full:
            self._warned_full = True
            log.warning("conf store holds %d confs (the cap): dropping the oldest; is something "
                        "other than the gateway sending PrepareConf?", self.max_confs)

    def _build(self, token: int, raw: RawConf, key: Optional[str]) -> PreparedConf:
        request_chain: list[tuple[str, RequestFilter, Any]] = []
        response_chain: list[tuple[str, ResponseFilter, Any]] = []
        req_body = resp_body = False
        req_vars: list[str] = []
        resp_vars: list[str] = []
        for name, value in raw:
            plugin = self.registry.get(name)
            if plugin is None:
                raise ConfRejected(f"plugin {name!r}: no such plugin in this runner")
            try:
                parsed = plugin.parse_conf(value)
            except Exception as exc:  # a plugin's parser may raise anything: fail closed
                reason = str(exc) or type(exc).__name__
                raise ConfRejected(f"plugin {name!r}: {reason}") from exc
            if _overrides(plugin, "request_filter"):
                request_chain.append((name, plugin.request_filter, parsed))
                req_body = req_body or plugin.prefetch_body
                req_vars.extend(plugin.prefetch_vars)
            if _overrides(plugin, "response_filter"):
                response_chain.append((name, plugin.response_filter, parsed))
                resp_body = resp_body or plugin.prefetch_body
                resp_vars.extend(plugin.prefetch_vars)
        return PreparedConf(
            token=token,
            raw=raw,
            key=key,
            request_chain=tuple(request_chain),
            response_chain=tuple(response_chain),
            request_prefetch=Prefetch.build(m.ReqBody() if req_body else None, req_vars),
            response_prefetch=Prefetch.build(m.RespBody() if resp_body else None, resp_vars),
        )
