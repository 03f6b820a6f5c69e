"""Makes ``reliability_kit`` (helpers and small plugins beside these tests) importable by name,
in this process and, through ``PYTHONPATH``, in runner subprocesses."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
