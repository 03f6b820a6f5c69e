"""The route objects of a route file, compiled for the development gateway's matcher.

``dev`` serves what ``routes apply`` would store in APISIX, so it reads the same route objects
(``tools.routes.Route``) and matches requests the way APISIX's default router does: the uri
exactly, or as a prefix when it ends in ``*``; then the methods and hosts; the highest
``priority`` wins, and among equals an exact uri beats the longest prefix. Everything a request
needs is precomputed here, once per route.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from apisix_openai_triton.runner.testkit import Conf

from .routes import Route

DEFAULT_TIMEOUT = 60.0
"""APISIX's upstream connect / send / read timeout when a route sets none (seconds)."""

REQUEST_PHASES = ("ext-plugin-pre-req", "ext-plugin-post-req")
RESPONSE_PHASE = "ext-plugin-post-resp"


class RouteCompileError(ValueError):
    """A route object the development gateway cannot serve (names the route)."""


@dataclass(frozen=True)
class PluginStep:
    """One ext-plugin-* gateway plugin of a route: its runner conf and degradation switch."""

    conf: Conf
    allow_degradation: bool


@dataclass(frozen=True)
class UpstreamNodes:
    """A route's upstream: weighted ``host:port`` nodes, scheme, Host policy and timeouts."""

    nodes: tuple[tuple[str, int], ...]
    scheme: str = "http"
    pass_host: str = "pass"
    upstream_host: Optional[str] = None
    connect_timeout: float = DEFAULT_TIMEOUT
    read_timeout: float = DEFAULT_TIMEOUT

    def pick(self) -> str:
        """A node by weight (APISIX balances by weight; a random draw has the same shares)."""
        live = [(node, weight) for node, weight in self.nodes if weight > 0]
        if not live:
            raise RouteCompileError("every upstream node has weight 0")
        if len(live) == 1:
            return live[0][0]
        return random.choices([n for n, _ in live], [w for _, w in live])[0]

    def host_header(self, node: str, client_host: Optional[str]) -> Optional[str]:
        """The upstream ``Host``: the client's (``pass``), the node's, or ``upstream_host``."""
        if self.pass_host == "node":
            return node
        if self.pass_host == "rewrite":
            return self.upstream_host
        return client_host


@dataclass(frozen=True)
class DevRoute:
    id: str
    uris: tuple[str, ...]
    methods: Optional[frozenset[str]]
    hosts: Optional[tuple[str, ...]]
    priority: int
    request_steps: tuple[PluginStep, ...]
    """ext-plugin-pre-req then ext-plugin-post-req, as the gateway runs them."""
    response_step: Optional[PluginStep]
    upstream: Optional[UpstreamNodes]

    def uri_score(self, path: str) -> Optional[int]:
        """How well ``path`` matches: higher is better, ``None`` for no match."""
        best: Optional[int] = None
        for uri in self.uris:
            if uri.endswith("*"):
                prefix = uri[:-1]
                score = len(prefix) if path.startswith(prefix) else None
            else:
                score = 1 << 20 if path == uri else None
            if score is not None and (best is None or score > best):
                best = score
        return best

    def host_matches(self, host: Optional[str]) -> bool:
        if self.hosts is None:
            return True
        if host is None:
            return False
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.lower()
        return any(name == h.lower() or (h.startswith("*") and name.endswith(h[1:].lower()))
                   for h in self.hosts)


class RouteTable:
    """The routes, and the matcher over them."""

    def __init__(self, routes: Sequence[DevRoute]) -> None:
        self.routes = tuple(routes)

    def retarget(self, node: str) -> "RouteTable":
        """Every upstream sent to the one ``host:port`` node (the demo's Triton stand-in, whose
        port is known only once it listens)."""
        return RouteTable([
            route if route.upstream is None else
            dataclasses.replace(route, upstream=dataclasses.replace(route.upstream,
                                                                    nodes=((node, 1),)))
            for route in self.routes
        ])

    def match(self, method: str, path: str, host: Optional[str]) -> Optional[DevRoute]:
        best: Optional[tuple[int, int, DevRoute]] = None
        for route in self.routes:
            score = route.uri_score(path)
            if score is None or not route.host_matches(host):
                continue
            if route.methods is not None and method not in route.methods:
                continue
            key = (route.priority, score)
            if best is None or key > best[:2]:
                best = (route.priority, score, route)
        return None if best is None else best[2]


def _step(route_id: str, name: str, value: Any) -> PluginStep:
    if not isinstance(value, Mapping) or not isinstance(value.get("conf"), list):
        raise RouteCompileError(f"route {route_id!r}: {name} needs a `conf` list")
    entries = []
    for item in value["conf"]:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("value", ""), str):
            raise RouteCompileError(f"route {route_id!r}: each {name} conf entry is "
                                    "{name, value} with value a JSON string")
        entries.append((item["name"], item.get("value", "")))
    # The key the real gateway sends: route#<id>#<gateway plugin>#<conf version>.
    key = f"route#{route_id}#{name}#1"
    return PluginStep(Conf(tuple(entries), key), bool(value.get("allow_degradation", False)))


def _timeouts(value: Any) -> tuple[float, float]:
    if not isinstance(value, Mapping):
        return DEFAULT_TIMEOUT, DEFAULT_TIMEOUT
    return float(value.get("connect", DEFAULT_TIMEOUT)), float(value.get("read", DEFAULT_TIMEOUT))


def _upstream(route_id: str, value: Any) -> Optional[UpstreamNodes]:
    if value is None:
        return None
    nodes = value.get("nodes") if isinstance(value, Mapping) else None
    if isinstance(nodes, Mapping):
        pairs = tuple((str(k), int(v)) for k, v in nodes.items())
    elif isinstance(nodes, list):  # the Admin API's other form: [{host, port, weight}]
        pairs = tuple((f"{n['host']}:{n['port']}", int(n.get("weight", 1))) for n in nodes)
    else:
        raise RouteCompileError(f"route {route_id!r}: the upstream has no nodes")
    if not pairs or not any(weight > 0 for _, weight in pairs):
        raise RouteCompileError(f"route {route_id!r}: the upstream has no node with weight > 0")
    connect, read = _timeouts(value.get("timeout"))
    return UpstreamNodes(
        nodes=pairs, scheme=str(value.get("scheme", "http")),
        pass_host=str(value.get("pass_host", "pass")), upstream_host=value.get("upstream_host"),
        connect_timeout=connect, read_timeout=read,
    )


def compile_route(route: Route) -> DevRoute:
    """One route object (as ``routes apply`` would PUT it) made ready for matching."""
    body = route.body
    uris = (body["uri"],) if "uri" in body else tuple(body.get("uris") or ())
    if not uris:
        raise RouteCompileError(f"route {route.id!r}: no uri")
    plugins = body.get("plugins") or {}
    steps = tuple(_step(route.id, name, plugins[name]) for name in REQUEST_PHASES
                  if name in plugins)
    response = plugins.get(RESPONSE_PHASE)
    methods = body.get("methods")
    hosts = body.get("hosts")
    return DevRoute(
        id=route.id, uris=tuple(uris),
        methods=None if methods is None else frozenset(m.upper() for m in methods),
        hosts=None if hosts is None else tuple(hosts),
        priority=int(body.get("priority", 0)),
        request_steps=steps,
        response_step=None if response is None else _step(route.id, RESPONSE_PHASE, response),
        upstream=_upstream(route.id, body.get("upstream")),
    )


def compile_routes(routes: Iterable[Route]) -> RouteTable:
    return RouteTable([compile_route(r) for r in routes])

