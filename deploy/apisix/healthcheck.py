#!/usr/bin/env python3
"""Container healthcheck for APISIX with the apisix-openai-triton runner inside.

APISIX answering is not enough: requests on our routes need the runner too, and APISIX keeps
serving (with 503s) while the runner is down or crash-looping. So the check passes only when
APISIX's status API says every worker has its configuration AND the runner's Unix socket
accepts a connection. Standard library only: it runs under the image's system Python.
Exit 0 when healthy, 1 otherwise with one line on stderr saying what is wrong.
"""

from __future__ import annotations

import argparse
import glob
import socket
import sys
import urllib.error
import urllib.request
from typing import Optional, Sequence

DEFAULT_URL = "http://127.0.0.1:7085/status/ready"
DEFAULT_SOCKETS = "/usr/local/apisix/conf/apisix-*.sock"


def check_url(url: str, timeout: float) -> Optional[str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def check_runner(pattern: str, timeout: float) -> Optional[str]:
    paths = sorted(glob.glob(pattern))
    if not paths:
        return f"no runner socket matches {pattern} (runner not started yet, or exited)"
    errors = []
    for path in paths:  # after a restart an old socket file may linger beside the live one
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(path)
                return None
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror or exc}")
    return "runner socket not accepting: " + "; ".join(errors)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", help=f"must answer 2xx (default {DEFAULT_URL})")
    parser.add_argument("--socket-glob", default=DEFAULT_SOCKETS,
                        help=f"the runner's socket (default {DEFAULT_SOCKETS}); '' skips the check")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per check")
    args = parser.parse_args(argv)
    problems = [check_url(url, args.timeout) for url in (args.url or [DEFAULT_URL])]
    if args.socket_glob:
        problems.append(check_runner(args.socket_glob, args.timeout))
    found = [p for p in problems if p]
    for problem in found:
        print(f"unhealthy: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
