"""Runner logging: one line per record, quiet by default, bodies kept out unless asked for.

The gateway copies the runner's stdout and stderr into its own error.log at warn level, in
chunks, so the default is warnings and worse on stderr, one line per record (a traceback is
folded into the same line), and a file for anything chattier.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

ROOT_LOGGER = "apisix_openai_triton"
LEVELS = ("debug", "info", "warning", "error", "critical")

_log_bodies = False


def log_bodies() -> bool:
    """Whether request/response bodies and prompts may appear in logs (``--log-bodies``)."""
    return _log_bodies


def set_log_bodies(enabled: bool) -> None:
    global _log_bodies
    _log_bodies = enabled


class OneLineFormatter(logging.Formatter):
    """``time level logger: message``, with any newline (tracebacks too) escaped as ``\\n``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


def parse_level(name: str) -> int:
    """``warn``/``warning``/... -> a logging level; raises ``ValueError`` for anything else."""
    key = name.strip().lower()
    if key == "warn":
        key = "warning"
    if key not in LEVELS:
        raise ValueError(f"unknown log level {name!r} (one of: {', '.join(LEVELS)})")
    return int(getattr(logging, key.upper()))


def configure(level: str = "warning", file: Optional[str] = None) -> None:
    """Send the project's records to stderr, or to ``file`` with errors still on stderr.

    Errors stay on stderr even with a file so the gateway's error.log says why a runner died.
    Raises ``OSError`` if the file cannot be opened.
    """
    numeric = parse_level(level)
    root = logging.getLogger(ROOT_LOGGER)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = OneLineFormatter()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    if file:
        to_file = logging.FileHandler(file, encoding="utf-8")
        to_file.setFormatter(formatter)
        to_file.setLevel(numeric)
        root.addHandler(to_file)
        stderr.setLevel(max(numeric, logging.ERROR))
    else:
        stderr.setLevel(numeric)
    root.addHandler(stderr)
    root.setLevel(numeric)
    root.propagate = False
