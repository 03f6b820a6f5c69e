"""Runner logging: one line per record, a file when asked, errors still on stderr."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from apisix_openai_triton.runner import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger(logs.ROOT_LOGGER)
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def test_file_gets_one_line_per_record_and_stderr_only_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    file = tmp_path / "runner.log"
    logs.configure("info", str(file))
    log = logging.getLogger("apisix_openai_triton.runner.test")
    log.info("hello %s", "there")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("it failed")
    lines = file.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("INFO apisix_openai_triton.runner.test: hello there")
    assert "ERROR" in lines[1] and "Traceback" in lines[1] and "ValueError: bad\\nthing" in lines[1]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "it failed" in err[0]


def test_level_names(restore_logging: None) -> None:
    assert logs.parse_level("warn") == logging.WARNING
    with pytest.raises(ValueError):
        logs.parse_level("chatty")


def test_bodies_stay_out_of_logs_unless_enabled() -> None:
    assert logs.log_bodies() is False
    logs.set_log_bodies(True)
    try:
        assert logs.log_bodies() is True
    finally:
        logs.set_log_bodies(False)
