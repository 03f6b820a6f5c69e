"""The runner's commands: ``run`` (what the gateway starts) and ``plugins`` (introspection).

``add_commands`` plugs them into the project's console script; ``main`` runs them standalone
(``python -m apisix_openai_triton.runner.cli run ...``). Machine output (``plugins``) goes to
stdout, logs to stderr, so the JSON stays parseable at any log level.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional

from . import logs
from .config import ENV_CONFIG, ENV_EXPIRE, ENV_LISTEN, ConfigError, RunnerConfig, resolve
from .runtime import EXIT_OK, EXIT_USAGE, run

ENV_HELP = f"""\
environment:
  {ENV_LISTEN}    socket address, "unix:/path" (set by the gateway when it starts
                           the runner; --listen overrides it)
  {ENV_EXPIRE}  seconds the gateway caches a conf token (default 3600); the
                           runner keeps each conf 1.2 times that long after its last use
  {ENV_CONFIG}  config file (default: none, built-in defaults; the
                           working directory is never searched: under APISIX it
                           holds the gateway's own conf/config.yaml)

precedence: command line > environment > config file > built-in defaults.
exit codes: 0 clean stop (SIGTERM/SIGINT), 1 runtime failure (e.g. cannot bind), 2 usage or
configuration error.
"""


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE",
        help=f"runner config file (YAML; see conf/config.yaml). Default: ${ENV_CONFIG}, else "
        "built-in defaults",
    )
    parser.add_argument(
        "--plugin", dest="plugins", action="append", metavar="MODULE:ATTR",
        help="also load this plugin (a Plugin subclass or instance); repeatable; added after the "
        "built-ins, installed entry points and the config file's `plugins`, and wins a name clash",
    )


def _add_run(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the external plugin runner (what APISIX's ext-plugin.cmd starts)",
        description="Serve the APISIX external-plugin protocol on a Unix socket until SIGTERM.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen", metavar="ADDR",
        help=f"socket to listen on: unix:/path or /path (default: ${ENV_LISTEN})",
    )
    parser.add_argument(
        "--socket-mode", metavar="OCTAL",
        help="permissions of the socket file, octal (default 0766, so the gateway's workers can "
        "connect when they run as another user)",
    )
    _add_source_flags(parser)
    parser.add_argument(
        "--log-level", metavar="LEVEL", choices=["debug", "info", "warn", "warning", "error", "critical"],
        help="debug, info, warning (default), error or critical",
    )
    parser.add_argument(
        "--log-file", metavar="FILE",
        help="write logs to FILE (errors are still copied to stderr); default: stderr only",
    )
    parser.add_argument(
        "--read-timeout", type=float, metavar="SECONDS",
        help="close a connection whose peer sends nothing for this long in the middle of a "
        "message or an ExtraInfo answer (default 60, like the gateway)",
    )
    parser.add_argument(
        "--workers", metavar="N|auto",
        help="worker processes accepting on the socket (default 1: no fork; auto: one per CPU). "
        "A conf token prepared on any worker is valid on all of them",
    )
    parser.add_argument(
        "--metrics-listen", metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off). Keep it on "
        "a private address: it has no authentication",
    )
    parser.add_argument(
        "--no-uvloop", dest="uvloop", action="store_const", const=False,
        help="use the asyncio event loop even when uvloop is installed",
    )
    parser.add_argument(
        "--log-bodies", action="store_const", const=True,
        help="DEBUG ONLY: allow request/response bodies and prompts in logs. Off by default: "
        "bodies can hold personal data and secrets",
    )
    parser.set_defaults(func=_cmd_run)


def _add_plugins(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list the plugins the runner would load, with their conf schemas, as JSON",
        description="Print the loaded plugins as a JSON array on stdout (logs go to stderr).",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_flags(parser)
    parser.set_defaults(func=_cmd_plugins)


def add_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``run`` and ``plugins`` to a console script; each sets ``func(args) -> int``."""
    _add_run(subparsers)
    _add_plugins(subparsers)


def _cli_values(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name, None) for name in names}


def config_from_args(args: argparse.Namespace) -> RunnerConfig:
    """The ``RunnerConfig`` for parsed ``run``/``plugins`` flags; raises ``ConfigError``."""
    cli = _cli_values(
        args,
        ("config", "listen", "socket_mode", "log_level", "log_file", "plugins", "read_timeout",
         "uvloop", "log_bodies", "workers", "metrics_listen"),
    )
    return resolve(cli)


def _usage_error(message: str) -> int:
    print(f"apisix-openai-triton: {message}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return _usage_error(str(exc))
    return run(config, fast_exit=True)


def describe_plugins(config: RunnerConfig) -> list[dict[str, Any]]:
    """What ``plugins`` prints: name, source, phases, prefetch declarations, conf schema."""
    from .plugin import Plugin
    from .registry import PluginRegistry

    registry = PluginRegistry.discover(config.plugins)
    described = []
    for plugin in registry:
        kind = type(plugin)
        phases = [
            phase for phase, method in (("request", "request_filter"), ("response", "response_filter"))
            if getattr(kind, method) is not getattr(Plugin, method)
        ]
        described.append({
            "name": plugin.name,
            "source": registry.source(plugin.name),
            "phases": phases,
            "prefetch_body": plugin.prefetch_body,
            "prefetch_vars": list(plugin.prefetch_vars),
            "conf_schema": None if plugin.conf_schema is None else dict(plugin.conf_schema),
            "doc": (kind.__doc__ or "").strip().split("\n", 1)[0],
        })
    return described


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import PluginLoadError

    try:
        config = config_from_args(args)
        logs.configure(config.log_level, config.log_file)
        described = describe_plugins(config)
    except (ConfigError, PluginLoadError, ValueError, OSError) as exc:
        return _usage_error(str(exc))
    json.dump(described, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m apisix_openai_triton.runner.cli",
        description="The APISIX external plugin runner of apisix-openai-triton.",
    )
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
