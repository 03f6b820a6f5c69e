"""The ``apisix-openai-triton`` console script: one entry point for every command.

The gateway restarts the runner after a crash and every request waits for it, so ``run`` must
start fast: each command's module is imported only when that command is asked for (``--help``
with no command imports them all to list them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Callable, Optional

# command -> module whose ``add_commands(subparsers)`` defines it (and maybe siblings)
COMMANDS: dict[str, str] = {
    "run": "apisix_openai_triton.runner.cli",
    "plugins": "apisix_openai_triton.runner.cli",
    "routes": "apisix_openai_triton.tools.routes_cli",
    "demo": "apisix_openai_triton.tools.demo",
    "dev": "apisix_openai_triton.tools.dev_gateway",
    "mock-triton": "apisix_openai_triton.tools.mock_triton",
    "bench": "apisix_openai_triton.tools.bench",
}


def _requested_command(argv: Sequence[str]) -> Optional[str]:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apisix-openai-triton",
        description="OpenAI-compatible API for Triton-served LLMs on Apache APISIX: the external "
        "plugin runner and its tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _requested_command(argv)
    modules = [COMMANDS[wanted]] if wanted else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        add: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
        add = importlib.import_module(name).add_commands
        add(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
