"""The declarative route file, turned into the route objects the APISIX Admin API stores.

Pure: text in, route objects out (the CLI does the I/O). Every refusal names the file, the line,
the route and the key, because the person reading it is editing a YAML file, not this code.
The plugin confs are checked by a parse function per plugin name that the caller passes in, so
the CLI can hand over the runner's own plugin classes and the tests small stand-ins.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, NoReturn, Optional, Union

import yaml

REQUEST_PLUGIN = "openai-to-triton"
RESPONSE_PLUGIN = "triton-to-openai"
RESPONSE_GATEWAY_PLUGIN = "ext-plugin-post-resp"
REQUEST_PHASES = {"pre-req": "ext-plugin-pre-req", "post-req": "ext-plugin-post-req"}
MANAGED_LABEL = ("managed-by", "apisix-openai-triton")
MAX_FILE_BYTES = 1 << 20
FORMAT_VERSION = 1

ConfParser = Callable[[str], object]
"""Parses one plugin conf string, raising an exception (``ConfError``) for a conf it refuses."""

# Where the runner finds its plugins (pyproject entry points), and where ours live if the
# installed metadata is older than the source tree.
_ENTRY_POINT_GROUP = "apisix_openai_triton.plugins"
_OWN_PLUGINS = {
    REQUEST_PLUGIN: "apisix_openai_triton.plugins.openai_to_triton:OpenAIToTriton",
    RESPONSE_PLUGIN: "apisix_openai_triton.plugins.triton_to_openai:TritonToOpenAI",
}

_ROUTE_ONLY_KEYS = ("id", "uri", "uris", "name", "desc")
_SHARED_KEYS = (
    "hosts", "methods", "priority", "upstream", REQUEST_PLUGIN, RESPONSE_PLUGIN, "plugins",
    "allow_degradation", "request_phase", "labels",
)
# Mapping-valued keys: a route's mapping is merged over the default's one key at a time.
_MERGED_KEYS = ("upstream", REQUEST_PLUGIN, RESPONSE_PLUGIN, "plugins", "labels")
_UPSTREAM_KEYS = (
    "nodes", "scheme", "type", "timeout", "retries", "retry_timeout", "pass_host",
    "upstream_host", "hash_on", "key", "checks", "keepalive_pool", "tls",
)
_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE")
_ID_RE = re.compile(r"^[a-zA-Z0-9._-]{1,64}$")
_LABEL_RE = re.compile(r"^\S{1,64}$")
_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[0-9a-zA-Z._-]+)$")
_ROUTE_HOST_RE = re.compile(r"^\*?[0-9a-zA-Z._-]+$")
# Gateway plugins that authenticate; they run after ext-plugin-pre-req unless told otherwise.
_AUTH_PLUGIN_RE = re.compile(r"(-auth|^openid-connect|^authz-.*|^wolf-rbac|^opa)$")
_PRE_REQ_PRIORITY = 12000


class RouteFileError(ValueError):
    """A route file the tool refuses; ``str()`` is the whole message for the user."""

    def __init__(
        self, path: str, line: Optional[int], message: str,
        route: Optional[str] = None, key: Optional[str] = None,
    ) -> None:
        self.path = path
        self.line = line
        self.route = route
        self.key = key
        self.message = message
        where = f"{path}:{line}" if line else path
        parts = [where]
        if route is not None:
            parts.append(f"route {route!r}")
        if key is not None:
            parts.append(f"key {key!r}")
        super().__init__(": ".join(parts + [message]))


@dataclass(frozen=True)
class Route:
    """One route: its Admin API id, the object PUT there, where it is in the file, and advice."""

    id: str
    body: dict[str, Any]
    line: int
    notes: tuple[str, ...] = ()


# --- YAML with line numbers -------------------------------------------------------------------

class _Map(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _Seq(list[Any]):
    """A YAML sequence that remembers the line of itself and of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records lines, refuses duplicate and non-string keys, keeps dates as text."""


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    result = _Map()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    own_count = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # `<<: *anchor` pairs come first; the mapping's own keys win
    merged_count = len(node.value) - own_count
    own_keys: set[str] = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise _YamlShapeError(line, f"keys must be text, not {key!r} (quote it)")
        if index >= merged_count:
            if key in own_keys:
                raise _YamlShapeError(
                    line, f"duplicate key {key!r} (first at line {result.key_lines[key]})")
            own_keys.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(item, deep=True) for item in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [item.start_mark.line + 1 for item in node.value]
    return result


def _construct_text(loader: _LineLoader, node: yaml.ScalarNode) -> str:
    return loader.construct_scalar(node)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
# `date_string: 2024-07-26` is text to the plugin, not a date object JSON cannot hold.
_LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)


class _YamlShapeError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# --- the file --------------------------------------------------------------------------------

class _File:
    """Error reporting for one file: every check names the line it is about."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, line: Optional[int], message: str, route: Optional[str] = None,
             key: Optional[str] = None) -> NoReturn:
        raise RouteFileError(self.path, line, message, route, key)


def _line_of(container: Any, key: Union[str, int], default: int) -> int:
    if isinstance(container, _Map) and isinstance(key, str):
        return container.key_lines.get(key, default)
    if isinstance(container, _Seq) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", default) or default


def parse_route_file(
    text: str,
    path: str = "<routes>",
    *,
    validators: Optional[Mapping[str, ConfParser]] = None,
    upstream: Optional[Mapping[str, Any]] = None,
) -> list[Route]:
    """The routes a route file describes, checked; plugin confs parsed by ``validators``.

    ``validators`` maps a plugin name to its conf parser (see ``plugin_validators``); ``None``
    skips that check. ``upstream``, in the file's upstream format, replaces the upstream of every
    route that has one (the development gateway points the shipped file at its Triton stand-in).
    """
    f = _File(path)
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        f.fail(None, f"the file is larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except _YamlShapeError as exc:
        f.fail(exc.line, exc.message)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        f.fail(None if mark is None else mark.line + 1, f"not valid YAML: {exc.problem or exc}")
    except yaml.YAMLError as exc:
        f.fail(None, f"not valid YAML: {exc}")
    if not isinstance(doc, _Map):
        f.fail(getattr(doc, "line", 1), "the file must be a mapping with a `routes:` list")
    _check_keys(f, doc, ("version", "defaults", "routes"), None, None)
    if "version" in doc and doc["version"] != FORMAT_VERSION:
        f.fail(doc.key_lines["version"], f"unsupported version {doc['version']!r} "
               f"(this tool reads version {FORMAT_VERSION})", key="version")
    defaults = doc.get("defaults", _Map())
    if not isinstance(defaults, _Map):
        f.fail(_line_of(doc, "defaults", 1), "must be a mapping", key="defaults")
    _check_keys(f, defaults, _SHARED_KEYS, None, "defaults.")
    routes = doc.get("routes")
    if not isinstance(routes, _Seq) or not routes:
        f.fail(_line_of(doc, "routes", doc.line), "must be a non-empty list of routes",
               key="routes")
    if validators is not None:
        # Routes usually share their confs (from `defaults`): parse each distinct one once.
        validators = {name: functools.lru_cache(maxsize=None)(parse)
                      for name, parse in validators.items()}
    override = None
    if upstream is not None:
        override = _upstream(_File("upstream override"), _as_map(upstream), None, "upstream")

    built: list[Route] = []
    seen: dict[str, int] = {}
    for index, spec in enumerate(routes):
        line = _line_of(routes, index, routes.line)
        if not isinstance(spec, _Map):
            f.fail(line, "each route must be a mapping", key=f"routes[{index}]")
        route = _build_route(f, spec, defaults, validators, override)
        if route.id in seen:
            f.fail(route.line, f"duplicate route id (also at line {seen[route.id]})",
                   route=route.id, key="id")
        seen[route.id] = route.line
        built.append(route)
    return built


def load_route_file(
    path: str,
    *,
    validators: Optional[Mapping[str, ConfParser]] = None,
    upstream: Optional[Mapping[str, Any]] = None,
) -> list[Route]:
    """``parse_route_file`` on a file's contents (a missing or unreadable file is refused too)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RouteFileError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RouteFileError(path, None, f"not UTF-8 text: {exc.reason}") from None
    return parse_route_file(text, path, validators=validators, upstream=upstream)


def _as_map(value: Mapping[str, Any]) -> _Map:
    result = _Map(value)
    result.key_lines = {}
    return result


def _check_keys(f: _File, spec: _Map, allowed: Iterable[str], route: Optional[str],
                prefix: Optional[str]) -> None:
    allowed = tuple(allowed)
    for key in spec:
        if key not in allowed:
            f.fail(spec.key_lines.get(key, spec.line), "unknown key; expected one of: "
                   + ", ".join(allowed), route=route, key=(prefix or "") + key)


def _merged(f: _File, spec: _Map, defaults: _Map, key: str, route: str) -> Optional[_Map]:
    """The route's mapping for ``key`` over the default's: one level, ``null`` removes a key.

    The result remembers, per key, the line it came from (``key_lines``).
    """
    base, own = defaults.get(key), spec.get(key)
    # Only the response plugin can be switched off (`false`); every other mapping is a mapping.
    switchable = key == RESPONSE_PLUGIN
    for value, owner, prefix in ((base, defaults, "defaults."), (own, spec, "")):
        if value is not None and not isinstance(value, _Map) \
                and not (switchable and value is False):
            f.fail(_line_of(owner, key, owner.line), "must be a mapping", route=route,
                   key=prefix + key)
    if key not in spec and key not in defaults:
        return None
    merged = _Map()
    merged.key_lines = {}
    merged.line = _line_of(spec, key, 0) if key in spec else _line_of(defaults, key, 0)
    for layer in (base, own):
        if isinstance(layer, _Map):
            for k, v in layer.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
                    merged.key_lines[k] = layer.key_lines.get(k, merged.line)
    return merged


def _value(spec: _Map, defaults: _Map, key: str) -> tuple[Any, int, str]:
    """A plain (non-merged) key: the route's value, else the default's; with line and key name."""
    if key in spec:
        return spec[key], spec.key_lines[key], key
    if key in defaults:
        return defaults[key], defaults.key_lines[key], "defaults." + key
    return None, spec.line, key


def _derive_id(uris: list[str], hosts: Optional[list[str]]) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", uris[0]).strip("-") or "root"
    if hosts:
        slug += "-" + hashlib.sha256(",".join(sorted(hosts)).encode()).hexdigest()[:8]
    if len(slug) > 64:
        slug = slug[:55] + "-" + hashlib.sha256(slug.encode()).hexdigest()[:8]
    return slug


def _build_route(
    f: _File, spec: _Map, defaults: _Map, validators: Optional[Mapping[str, ConfParser]],
    upstream_override: Optional[dict[str, Any]],
) -> Route:
    given_id = spec.get("id")
    label = str(given_id) if given_id is not None else f"#{spec.line}"
    _check_keys(f, spec, _ROUTE_ONLY_KEYS + _SHARED_KEYS, label, None)

    # uri / uris
    if ("uri" in spec) == ("uris" in spec):
        f.fail(spec.line, "set exactly one of `uri` and `uris`", route=label)
    if "uri" in spec:
        raw_uris: Any = [spec["uri"]]
        uri_line = spec.key_lines["uri"]
    else:
        raw_uris = spec["uris"]
        uri_line = spec.key_lines["uris"]
        if not isinstance(raw_uris, list) or not raw_uris:
            f.fail(uri_line, "must be a non-empty list", route=label, key="uris")
    for uri in raw_uris:
        if not isinstance(uri, str) or not uri.startswith("/") or len(uri) > 4096:
            f.fail(uri_line, f"{uri!r} is not a path starting with '/'", route=label,
                   key="uri" if "uri" in spec else "uris")
    uris: list[str] = list(dict.fromkeys(raw_uris))

    hosts_value, hosts_line, hosts_key = _value(spec, defaults, "hosts")
    hosts: Optional[list[str]] = None
    if hosts_value is not None:
        hosts = [hosts_value] if isinstance(hosts_value, str) else hosts_value
        if not isinstance(hosts, list) or not hosts or not all(
                isinstance(h, str) and _ROUTE_HOST_RE.match(h) for h in hosts):
            f.fail(hosts_line, "must be a host name or a non-empty list of them "
                   "(a leading `*.` wildcard is allowed)", route=label, key=hosts_key)

    # id
    if given_id is None:
        route_id = _derive_id(uris, hosts)
    else:
        route_id = given_id if isinstance(given_id, str) else str(given_id)
        if isinstance(given_id, bool) or not isinstance(given_id, (str, int)) \
                or not _ID_RE.match(route_id):
            f.fail(spec.key_lines["id"], "must be 1 to 64 characters of letters, digits, "
                   "'-', '_' and '.'", route=label, key="id")
    label = route_id

    body: dict[str, Any] = {}
    name = spec.get("name", route_id)
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        f.fail(_line_of(spec, "name", spec.line), "must be text of 1 to 100 characters",
               route=label, key="name")
    body["name"] = name
    if "desc" in spec:
        if not isinstance(spec["desc"], str) or len(spec["desc"]) > 256:
            f.fail(spec.key_lines["desc"], "must be text of at most 256 characters",
                   route=label, key="desc")
        body["desc"] = spec["desc"]
    if len(uris) == 1 and "uri" in spec:
        body["uri"] = uris[0]
    else:
        body["uris"] = uris
    if hosts is not None:
        body["hosts"] = list(hosts)

    methods, methods_line, methods_key = _value(spec, defaults, "methods")
    if methods is not None:
        if not isinstance(methods, list) or not methods or not all(
                isinstance(m, str) and m.upper() in _METHODS for m in methods):
            f.fail(methods_line, "must be a non-empty list of HTTP methods ("
                   + ", ".join(_METHODS) + ")", route=label, key=methods_key)
        body["methods"] = list(dict.fromkeys(m.upper() for m in methods))

    priority, priority_line, priority_key = _value(spec, defaults, "priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int):
            f.fail(priority_line, "must be an integer", route=label, key=priority_key)
        body["priority"] = priority

    labels = _merged(f, spec, defaults, "labels", label) or _Map()
    for k, v in labels.items():
        if not isinstance(v, str) or not _LABEL_RE.match(v) or not k:
            f.fail(labels.key_lines.get(k, labels.line), "a label value is text of 1 to 64 "
                   "characters without spaces", route=label, key=f"labels.{k}")
    labels_out = {MANAGED_LABEL[0]: MANAGED_LABEL[1], **labels}
    if len(labels_out) > 16:
        f.fail(labels.line, "at most 15 labels (the gateway allows 16, one is "
               f"{MANAGED_LABEL[0]})", route=label, key="labels")
    body["labels"] = labels_out

    phase, phase_line, phase_key = _value(spec, defaults, "request_phase")
    phase = "pre-req" if phase is None else phase
    if phase not in REQUEST_PHASES:
        f.fail(phase_line, "must be `pre-req` or `post-req`", route=label, key=phase_key)
    request_gateway_plugin = REQUEST_PHASES[phase]

    degrade, degrade_line, degrade_key = _value(spec, defaults, "allow_degradation")
    degrade = False if degrade is None else degrade
    if not isinstance(degrade, bool):
        f.fail(degrade_line, "must be true or false", route=label, key=degrade_key)

    models_only = all(u.rstrip("/").endswith("/models") for u in uris)

    # plugin confs
    request_conf = _merged(f, spec, defaults, REQUEST_PLUGIN, label)
    if request_conf is None:
        f.fail(spec.line, f"no `{REQUEST_PLUGIN}` conf: set it on the route or under `defaults`",
               route=label, key=REQUEST_PLUGIN)
    request_value = _conf_json(f, request_conf, label, REQUEST_PLUGIN)

    response_spec = spec.get(RESPONSE_PLUGIN, defaults.get(RESPONSE_PLUGIN))
    if models_only:
        # The request plugin answers /models itself (a Stop in the request phase), and after a
        # Stop the gateway neither calls the upstream nor runs ext-plugin-post-resp.
        response_wanted = isinstance(spec.get(RESPONSE_PLUGIN), _Map)
    else:
        response_wanted = response_spec is not False
    response_value: Optional[str] = None
    response_conf = _Map()
    if response_wanted:
        response_conf = _merged(f, spec, defaults, RESPONSE_PLUGIN, label) or response_conf
        response_value = _conf_json(f, response_conf, label, RESPONSE_PLUGIN)

    plugins = _merged(f, spec, defaults, "plugins", label) or _Map()
    managed = {request_gateway_plugin, RESPONSE_GATEWAY_PLUGIN}
    plugins_out: dict[str, Any] = {}
    for plugin_name, conf in plugins.items():
        line = plugins.key_lines.get(plugin_name, plugins.line)
        if plugin_name in managed:
            f.fail(line, "set by this tool from `openai-to-triton` / `triton-to-openai`; "
                   "remove it from `plugins`", route=label, key=f"plugins.{plugin_name}")
        if not isinstance(conf, dict):
            f.fail(line, "a plugin's conf must be a mapping (`{}` for none)", route=label,
                   key=f"plugins.{plugin_name}")
        plugins_out[plugin_name] = _plain(f, conf, line, label, f"plugins.{plugin_name}")
    plugins_out[request_gateway_plugin] = {
        "conf": [{"name": REQUEST_PLUGIN, "value": request_value}],
        "allow_degradation": degrade,
    }
    if response_value is not None:
        plugins_out[RESPONSE_GATEWAY_PLUGIN] = {
            "conf": [{"name": RESPONSE_PLUGIN, "value": response_value}],
            "allow_degradation": degrade,
        }
    body["plugins"] = plugins_out

    if not models_only or "upstream" in spec:
        upstream_spec = _merged(f, spec, defaults, "upstream", label)
        if upstream_override is not None:
            body["upstream"] = dict(upstream_override)
        elif upstream_spec is None:
            f.fail(spec.line, "no `upstream`: set it on the route or under `defaults`",
                   route=label, key="upstream")
        else:
            body["upstream"] = _upstream(f, upstream_spec, label, "upstream")

    if validators is not None:
        _validate(f, validators, label, REQUEST_PLUGIN, request_value, request_conf)
        if response_value is not None:
            _validate(f, validators, label, RESPONSE_PLUGIN, response_value, response_conf)

    notes = _auth_notes(label, phase, plugins_out)
    return Route(route_id, body, spec.line, notes)


def _auth_notes(route: str, phase: str, plugins: Mapping[str, Any]) -> tuple[str, ...]:
    """Advice when an auth plugin would run after the request plugin (it usually should not)."""
    if phase != "pre-req":
        return ()
    notes = []
    for name, conf in plugins.items():
        if not _AUTH_PLUGIN_RE.search(name):
            continue
        meta = conf.get("_meta") if isinstance(conf, dict) else None
        priority = meta.get("priority") if isinstance(meta, dict) else None
        if isinstance(priority, int) and priority > _PRE_REQ_PRIORITY:
            continue
        notes.append(
            f"route {route!r}: {name} runs after ext-plugin-pre-req (priority "
            f"{_PRE_REQ_PRIORITY}), so unauthenticated requests reach the runner and GET "
            f"/v1/models is answered without authentication; set `request_phase: post-req`, "
            f"or `plugins.{name}._meta.priority` above {_PRE_REQ_PRIORITY}"
        )
    return tuple(notes)


def _plain(f: _File, value: Any, line: int, route: Optional[str], key: str) -> Any:
    """``value`` as plain JSON data (refusing what JSON cannot carry)."""
    if isinstance(value, dict):
        return {k: _plain(f, v, _line_of(value, k, line), route, f"{key}.{k}")
                for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(f, v, _line_of(value, i, line), route, f"{key}[{i}]")
                for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            f.fail(line, "JSON has no NaN or infinity", route=route, key=key)
        return value
    f.fail(line, f"a {type(value).__name__} cannot be sent as JSON (quote it as text)",
           route=route, key=key)


def _conf_json(f: _File, conf: _Map, route: str, plugin: str) -> str:
    """The conf as the JSON string the gateway hands the runner (compact, file key order)."""
    data = _plain(f, conf, conf.line, route, plugin)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


_PATH_IN_MESSAGE = re.compile(r"\$\.([A-Za-z0-9_-]+)")
_NAME_IN_MESSAGE = re.compile(r"[`'\"]([A-Za-z0-9_-]+)[`'\"]")
_WORD_IN_MESSAGE = re.compile(r"[A-Za-z0-9_-]+")


def _validate(f: _File, validators: Mapping[str, ConfParser], route: str, plugin: str,
              value: str, conf: _Map) -> None:
    parse = validators.get(plugin)
    if parse is None:
        return
    try:
        parse(value)
    except Exception as exc:  # the plugin's ConfError, or whatever its parser raised
        message = str(exc) or type(exc).__name__
        message = message.removeprefix(f"{plugin} conf: ")
        key = plugin
        line = conf.line
        # Point at the conf key the plugin's message names, when it names one of ours: a
        # `$.key` path first, then a quoted name, then any bare word.
        named = (_PATH_IN_MESSAGE.findall(message) + _NAME_IN_MESSAGE.findall(message)
                 + _WORD_IN_MESSAGE.findall(message))
        for candidate in named:
            if candidate in conf:
                key = f"{plugin}.{candidate}"
                line = conf.key_lines.get(candidate, line)
                break
        f.fail(line, f"{plugin} refuses this conf: {message}", route=route, key=key)


def _upstream(f: _File, spec: _Map, route: Optional[str], key: str) -> dict[str, Any]:
    """The APISIX upstream object: nodes as ``{"host:port": weight}``, round robin, http."""
    _check_keys(f, spec, _UPSTREAM_KEYS, route, key + ".")
    nodes = spec.get("nodes")
    nodes_line = _line_of(spec, "nodes", spec.line)
    if nodes is None or (isinstance(nodes, (list, dict)) and not nodes):
        f.fail(nodes_line, "at least one node (host:port) is needed", route=route,
               key=f"{key}.nodes")
    out_nodes: dict[str, int] = {}
    items: list[tuple[Any, Any, int]]
    if isinstance(nodes, dict):
        items = [(k, v, _line_of(nodes, k, nodes_line)) for k, v in nodes.items()]
    elif isinstance(nodes, list):
        items = [(n, None, _line_of(nodes, i, nodes_line)) for i, n in enumerate(nodes)]
    elif isinstance(nodes, str):
        items = [(nodes, None, nodes_line)]
    else:
        f.fail(nodes_line, "must be host:port, a list of them, or a mapping host:port -> weight",
               route=route, key=f"{key}.nodes")
    for node, weight, line in items:
        if isinstance(node, dict):
            extra = set(node) - {"host", "port", "weight"}
            if extra:
                f.fail(line, f"unknown node key(s) {sorted(extra)}; a node has host, port, "
                       "weight", route=route, key=f"{key}.nodes")
            weight = node.get("weight", 1)
            address = _node_address(f, node.get("host"), node.get("port"), line, route, key)
        elif isinstance(node, str):
            address = _parse_node(f, node, line, route, key)
        else:
            f.fail(line, f"{node!r} is not host:port", route=route, key=f"{key}.nodes")
        weight = 1 if weight is None else weight
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            f.fail(line, "a node weight is an integer >= 0", route=route, key=f"{key}.nodes")
        if address in out_nodes:
            f.fail(line, f"node {address} is listed twice", route=route, key=f"{key}.nodes")
        out_nodes[address] = weight

    out: dict[str, Any] = {
        "nodes": out_nodes,
        "type": spec.get("type", "roundrobin"),
        "scheme": spec.get("scheme", "http"),
    }
    if out["type"] not in ("roundrobin", "chash", "ewma", "least_conn"):
        f.fail(_line_of(spec, "type", spec.line), "must be roundrobin, chash, ewma or "
               "least_conn", route=route, key=f"{key}.type")
    if out["scheme"] not in ("http", "https"):
        f.fail(_line_of(spec, "scheme", spec.line), "must be http or https", route=route,
               key=f"{key}.scheme")
    if "timeout" in spec:
        timeout = spec["timeout"]
        line = spec.key_lines.get("timeout", spec.line)
        if not isinstance(timeout, dict) or set(timeout) != {"connect", "send", "read"} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                for v in timeout.values()):
            f.fail(line, "must set connect, send and read, each a number of seconds > 0",
                   route=route, key=f"{key}.timeout")
    for name in _UPSTREAM_KEYS:
        if name in spec and name not in out:
            out[name] = _plain(f, spec[name], _line_of(spec, name, spec.line), route,
                               f"{key}.{name}")
    return out


def _parse_node(f: _File, node: str, line: int, route: Optional[str], key: str) -> str:
    if "://" in node:
        f.fail(line, f"{node!r}: a node is host:port without a scheme (set `scheme: https` "
               "for TLS)", route=route, key=f"{key}.nodes")
    host, sep, port = node.rpartition(":")
    if not sep or not port.isdigit():
        f.fail(line, f"{node!r} is not host:port", route=route, key=f"{key}.nodes")
    return _node_address(f, host, int(port), line, route, key)


def _node_address(f: _File, host: Any, port: Any, line: int, route: Optional[str],
                  key: str) -> str:
    if not isinstance(host, str) or not _HOST_RE.match(host):
        f.fail(line, f"{host!r} is not a host name or address", route=route,
               key=f"{key}.nodes")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        f.fail(line, f"{port!r} is not a port (1-65535)", route=route, key=f"{key}.nodes")
    return f"{host}:{port}"


# --- output ----------------------------------------------------------------------------------

def route_json(route: Route) -> str:
    """The route object as committed JSON files and dry runs show it (stable, human-readable)."""
    return json.dumps(route.body, ensure_ascii=False, indent=2) + "\n"


def plugin_validators(
    names: Iterable[str] = (REQUEST_PLUGIN, RESPONSE_PLUGIN),
) -> dict[str, ConfParser]:
    """Conf parsers from the runner's own plugin classes, so a conf the runner would refuse at
    PrepareConf is refused here, before anything reaches the gateway.

    Plugins are found as the runner finds them (the ``apisix_openai_triton.plugins`` entry
    points), falling back to this package's import paths. A plugin that cannot be loaded raises
    ``ImportError`` with the reason.
    """
    points = {ep.name: ep for ep in metadata.entry_points(group=_ENTRY_POINT_GROUP)}
    parsers: dict[str, ConfParser] = {}
    for name in names:
        try:
            if name in points:
                cls = points[name].load()
            elif name in _OWN_PLUGINS:
                module, _, attr = _OWN_PLUGINS[name].partition(":")
                cls = getattr(importlib.import_module(module), attr)
            else:
                raise ImportError(f"no plugin named {name!r} is installed")
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"cannot load plugin {name!r} to check its conf: {exc}") from exc
        parsers[name] = cls().parse_conf
    return parsers
