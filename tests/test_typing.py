"""``mypy --strict`` over the installed namespace, as part of the suite.

The folders ``runner/``, ``plugins/`` and ``tools/`` are installed as ``apisix_openai_triton.*``;
mypy cannot follow the editable-install import hook, so the test lays out that namespace with
symlinks in a temporary folder and checks it there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    ns = tmp_path / "apisix_openai_triton"
    ns.mkdir()
    (ns / "__init__.py").write_text("")
    for pkg in ("runner", "plugins", "tools"):
        (ns / pkg).symlink_to(ROOT / pkg, target_is_directory=True)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "apisix_openai_triton.runner",
         "-p", "apisix_openai_triton.plugins", "-p", "apisix_openai_triton.tools"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
