"""The README's code is the code the tests run: its example plugin and test must not drift."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _body(path: Path) -> str:
    """The file from its first ``class`` / ``CONF`` line on (imports differ by location)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("class ", "CONF")))
    return "\n".join(lines[start:])


def test_readme_example_plugin_and_test_match_the_tested_files() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("example_plugin.py", "test_example_plugin.py"):
        assert _body(ROOT / "tests" / "runner" / name) in readme, name
