"""``apisix-openai-triton demo``: the whole path on a laptop, in one command.

The README's first command on a fresh machine: the plugin runner (a child process, started the
way APISIX starts it), the Triton stand-in (``mock-triton``, in this process) and the development
gateway (``dev``, in this process), wired with the shipped example route file and its upstream
pointed at the stand-in. It prints the URL and snippets to paste, and Ctrl-C (or SIGTERM) stops
all three: the gateway first, the runner last, its socket removed, exit code 0.

The route file is ``deploy/routes.yaml`` of the clone the package runs from; an installed wheel
has none, so the same routes are built in here (a test keeps the two equal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from .dev_gateway import (
    STAND_IN_NOTICE,
    configure_logging,
    default_route_file,
    install_stop_signals,
    serve_dev_gateway,
    wait_for_stop,
)
from .dev_routes import RouteTable, compile_routes
from .dev_runner import RunnerStartError, spawn_runner
from .mock_triton import start_mock_triton
from .routes import (
    REQUEST_PLUGIN,
    RouteFileError,
    load_route_file,
    parse_route_file,
    plugin_validators,
)

DEFAULT_PORT = 9080
DEFAULT_TRITON_PORT = 8000
HOST = "127.0.0.1"

BUILTIN_ROUTES_NAME = "<built-in demo routes>"
BUILTIN_ROUTES = """\
version: 1
defaults:
  upstream:
    nodes:
      - triton:8000
  openai-to-triton:
    model: demo
    backend: vllm
    template: llama3
  triton-to-openai: {}
routes:
  - id: openai-triton-chat
    uri: /v1/chat/completions
  - id: openai-triton-completions
    uri: /v1/completions
  - id: openai-triton-models
    uri: /v1/models
"""
"""The routes of ``deploy/routes.yaml``, for an installation without the repository."""


@dataclass(frozen=True)
class DemoRoutes:
    table: RouteTable
    source: str
    """The file read, or ``BUILTIN_ROUTES_NAME``."""


def demo_routes(route_file: Optional[str] = None) -> DemoRoutes:
    """The demo's routes, checked like ``routes apply`` checks them: from ``route_file``, else
    the clone's ``deploy/routes.yaml``, else the built-in copy. Raises ``RouteFileError``."""
    validators = plugin_validators()
    path = route_file or default_route_file()
    if path is None:
        routes = parse_route_file(BUILTIN_ROUTES, BUILTIN_ROUTES_NAME, validators=validators)
        return DemoRoutes(compile_routes(routes), BUILTIN_ROUTES_NAME)
    return DemoRoutes(compile_routes(load_route_file(str(path), validators=validators)),
                      str(path))


def request_confs(table: RouteTable) -> list[dict[str, Any]]:
    """Every distinct openai-to-triton conf on the routes, decoded."""
    seen: dict[str, dict[str, Any]] = {}
    for route in table.routes:
        for step in route.request_steps:
            for name, value in step.conf.entries:
                if name == REQUEST_PLUGIN and value not in seen:
                    seen[value] = json.loads(value)
    return list(seen.values())


def triton_models(confs: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The stand-in's ``NAME:BACKEND`` model specs: every Triton model the confs name."""
    specs: dict[str, str] = {}
    for conf in confs:
        backend = conf.get("backend", "generic")
        names = [conf["model"]] if "model" in conf else list(conf.get("models", {}).values())
        for name in names:
            specs.setdefault(name, f"{name}:{backend}")
    return tuple(specs.values())


def served_model(confs: Sequence[dict[str, Any]]) -> str:
    """The model name a client sends, for the snippets."""
    conf = confs[0]
    if "model" in conf:
        return str(conf.get("served_model_name", conf["model"]))
    return str(conf.get("default_model") or next(iter(conf["models"])))


def banner(url: str, model: str, triton_url: str, socket_path: str, source: str) -> str:
    """What the demo prints once everything listens: addresses, then snippets to paste."""
    api = f"{url}/v1"
    message = '[{"role": "user", "content": "Hello!"}]'
    plain = json.dumps({"model": model, "messages": json.loads(message)})
    stream = json.dumps({"model": model, "messages": json.loads(message), "stream": True})
    routes = source if source != BUILTIN_ROUTES_NAME else (
        f"{source} (deploy/routes.yaml is not here: using the same routes built in)")
    return f"""\
apisix-openai-triton demo: ready. Ctrl-C stops everything.

  OpenAI API:    {api}  (model "{model}")
  dev gateway:   {url}  ({STAND_IN_NOTICE})
  mock Triton:   {triton_url}  (deterministic text, no GPU)
  plugin runner: unix:{socket_path}
  routes:        {routes}

# Plain:
curl {api}/chat/completions -H 'Content-Type: application/json' \\
  -d '{plain}'

# Streaming:
curl -N {api}/chat/completions -H 'Content-Type: application/json' \\
  -d '{stream}'

# Python (pip install openai), plain then streaming:
python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{api}", api_key="unused")
messages = {message}
reply = client.chat.completions.create(model="{model}", messages=messages)
print(reply.choices[0].message.content)
for chunk in client.chat.completions.create(model="{model}", messages=messages, stream=True):
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
EOF
"""


def _busy(exc: OSError, what: str, port: int, flag: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"demo: port {port} ({what}) is busy: choose another with {flag} PORT "
                f"({flag} 0 picks a free one)")
    return f"demo: cannot listen on {HOST}:{port} ({what}): {exc.strerror or exc}"


# --- command line ---------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="try it on this machine: runner + mock Triton + dev gateway, stopped by Ctrl-C",
        description="Start the plugin runner, a Triton stand-in (mock-triton) and the "
        "development gateway (dev, a stand-in for APISIX, not a gateway) with the example "
        "route file deploy/routes.yaml, print the URL with curl and Python snippets, and "
        "stop all of them on Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port of the OpenAI API (default %(default)s; 0 picks a free one)")
    parser.add_argument("--triton-port", type=int, default=DEFAULT_TRITON_PORT,
                        help="port of the Triton stand-in (default %(default)s; 0 picks a free "
                        "one)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="log level (default %(default)s; info logs one line per request)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    return asyncio.run(_serve(args.port, args.triton_port))


async def _serve(port: int, triton_port: int) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        try:
            routes = demo_routes()
        except (RouteFileError, ImportError, ValueError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
        confs = request_confs(routes.table)
        try:
            mock, actual_triton = await start_mock_triton(HOST, triton_port,
                                                          models=triton_models(confs))
        except OSError as exc:
            print(_busy(exc, "mock Triton", triton_port, "--triton-port"), file=sys.stderr)
            return 1
        stack.push_async_callback(mock.cleanup)
        table = routes.table.retarget(f"{HOST}:{actual_triton}")
        try:
            runner = await stack.enter_async_context(spawn_runner())
        except RunnerStartError as exc:
            print(f"demo: the plugin runner did not start: {exc}", file=sys.stderr)
            return 1
        try:
            gateway = await stack.enter_async_context(
                serve_dev_gateway(table, runner.socket_path, host=HOST, port=port))
        except OSError as exc:
            print(_busy(exc, "OpenAI API", port, "--port"), file=sys.stderr)
            return 1
        print(banner(gateway.url, served_model(confs), f"http://{HOST}:{actual_triton}",
                     runner.socket_path, routes.source), flush=True)
        code = await wait_for_stop(stop, runner.proc)
    return code
