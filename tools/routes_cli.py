"""``apisix-openai-triton routes apply|diff|delete|export FILE``: the route file, on the gateway.

Everything is checked before the first request: a file with one bad route changes nothing.
Exit codes (also in ``--help``): 0 done (``diff``: nothing to change), 1 ``diff`` found changes,
2 invalid file or options, 3 gateway unreachable, 4 key refused (401/403), 5 the Admin API
refused a route (400 and other errors, with its message).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from .admin import DEFAULT_ADMIN_URL, AdminClient, AdminError
from .route_diff import route_diff
from .routes import MANAGED_LABEL, Route, RouteFileError, load_route_file, plugin_validators, \
    route_json

EXIT_OK, EXIT_CHANGES, EXIT_INVALID = 0, 1, 2
KEY_ENV = "APISIX_ADMIN_KEY"
URL_ENV = "APISIX_ADMIN_URL"
_PROG = "apisix-openai-triton routes"

_EPILOG = """\
exit codes: 0 done (diff: no changes), 1 diff found changes, 2 invalid file or options,
3 gateway unreachable, 4 admin key refused (401/403), 5 the Admin API refused a route.
The admin key comes from --admin-key or the APISIX_ADMIN_KEY environment variable (prefer the
variable: command lines are visible to other users of the machine)."""


def add_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``routes`` and its actions to the console script's parser."""
    parser = subparsers.add_parser(
        "routes", help="register the OpenAI routes through the APISIX Admin API",
        description="Turn a declarative route file into APISIX routes (ext-plugin-pre-req with\n"
        "openai-to-triton, ext-plugin-post-resp with triton-to-openai, the Triton upstream)\n"
        "and manage them through the Admin API.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="routes_action", metavar="ACTION", required=True)
    specs = (
        ("apply", _apply, "create or replace the file's routes (PUT, idempotent)"),
        ("diff", _diff, "show what apply would change on the gateway"),
        ("delete", _delete, "delete the file's routes (absent ones are fine)"),
        ("export", _export, "write each route as JSON (ID.json) into a directory"),
    )
    for name, func, text in specs:
        action = actions.add_parser(name, help=text, description=text, epilog=_EPILOG,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        action.add_argument("file", metavar="FILE", help="the route file (YAML)")
        if name != "export":
            action.add_argument("--admin-url", default=os.environ.get(URL_ENV, DEFAULT_ADMIN_URL),
                                help=f"Admin API address (default: ${URL_ENV} or "
                                f"{DEFAULT_ADMIN_URL})")
            action.add_argument("--admin-key", default=None,
                                help=f"Admin API key (default: ${KEY_ENV})")
            action.add_argument("--timeout", type=float, default=10.0,
                                help="seconds to wait for each Admin API answer (default: 10)")
        if name != "delete":
            action.add_argument("--no-validate", action="store_true",
                                help="do not check the plugin confs with the installed plugins")
        if name == "apply":
            action.add_argument("--dry-run", action="store_true",
                                help="print the JSON bodies and equivalent curl commands; send "
                                "nothing")
        if name == "export":
            action.add_argument("--out", required=True, metavar="DIR",
                                help="directory for the JSON files")
        action.set_defaults(func=func)


def _error(message: str) -> None:
    print(f"{_PROG}: error: {message}", file=sys.stderr)


def _load(args: argparse.Namespace) -> Optional[list[Route]]:
    """The file's routes, checked; ``None`` after printing why not."""
    try:
        validators = None if getattr(args, "no_validate", False) else plugin_validators()
    except ImportError as exc:
        _error(f"{exc} (--no-validate skips this check)")
        return None
    try:
        routes = load_route_file(args.file, validators=validators)
    except RouteFileError as exc:
        _error(str(exc))
        return None
    for route in routes:
        for note in route.notes:
            print(f"{_PROG}: warning: {note}", file=sys.stderr)
    return routes


def _client(args: argparse.Namespace) -> AdminClient:
    key = args.admin_key if args.admin_key is not None else os.environ.get(KEY_ENV)
    return AdminClient(args.admin_url, key or None, args.timeout)


def _apply(args: argparse.Namespace) -> int:
    routes = _load(args)
    if routes is None:
        return EXIT_INVALID
    if args.dry_run:
        sys.stdout.write(dry_run_script(routes, args.admin_url, args.file))
        return EXIT_OK
    client = _client(args)
    done: list[str] = []
    for route in routes:
        try:
            status = client.put_route(route.id, route.body)
        except AdminError as exc:
            _error(str(exc))
            if done:
                _error(f"applied before the failure: {', '.join(done)}")
            return exc.exit_code
        done.append(route.id)
        verb = "created" if status == 201 else "updated"
        print(f"{verb} route {route.id} ({status}) {client.route_url(route.id)}")
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    routes = _load(args)
    if routes is None:
        return EXIT_INVALID
    client = _client(args)
    changed = 0
    for route in routes:
        try:
            stored = client.get_route(route.id)
        except AdminError as exc:
            _error(str(exc))
            return exc.exit_code
        lines = route_diff(route.id, stored, route.body, args.file)
        if lines:
            changed += 1
            print("\n".join(lines))
        else:
            print(f"route {route.id}: up to date")
    print(f"{changed} of {len(routes)} route(s) would change")
    return EXIT_CHANGES if changed else EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    routes = _load(args)
    if routes is None:
        return EXIT_INVALID
    client = _client(args)
    for route in routes:
        try:
            existed = client.delete_route(route.id)
        except AdminError as exc:
            _error(str(exc))
            return exc.exit_code
        print(f"deleted route {route.id}" if existed else f"route {route.id}: already absent")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    routes = _load(args)
    if routes is None:
        return EXIT_INVALID
    try:
        written = export_routes(routes, Path(args.out))
    except OSError as exc:
        _error(f"cannot write into {args.out}: {exc.strerror or exc}")
        return EXIT_INVALID
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def export_routes(routes: Sequence[Route], out: Path) -> list[Path]:
    """Write ``ID.json`` per route; remove JSON files this tool wrote for routes now gone."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = {f"{route.id}.json" for route in routes}
    for old in out.glob("*.json"):
        if old.name not in wanted and _is_managed(old):
            old.unlink()
    written = []
    for route in routes:
        path = out / f"{route.id}.json"
        path.write_text(route_json(route), encoding="utf-8")
        written.append(path)
    return written


def _is_managed(path: Path) -> bool:
    try:
        body: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    labels = body.get("labels") if isinstance(body, dict) else None
    return isinstance(labels, dict) and labels.get(MANAGED_LABEL[0]) == MANAGED_LABEL[1]


def dry_run_script(routes: Sequence[Route], admin_url: str, source: str) -> str:
    """A shell script doing what ``apply`` would do; the key stays ``$APISIX_ADMIN_KEY``."""
    client = AdminClient(admin_url)
    parts = [f"# {len(routes)} route(s) from {source}; the key is read from ${KEY_ENV}\n"]
    for route in routes:
        parts.append(
            f"\n# route {route.id} ({source}:{route.line})\n"
            f"curl -sS -X PUT {shlex.quote(client.route_url(route.id))} \\\n"
            f"  -H \"X-API-KEY: ${KEY_ENV}\" -H 'Content-Type: application/json' \\\n"
            f"  --data-binary @- <<'JSON'\n{route_json(route)}JSON\n"
        )
    return "".join(parts)
