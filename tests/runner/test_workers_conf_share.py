"""The shared conf log: one worker's tokens found by another, expiry, restart continuity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apisix_openai_triton.runner.conf_share import FILE_NAME, SharedConfLog
from apisix_openai_triton.runner.conf_store import ConfStore
from apisix_openai_triton.runner.registry import PluginRegistry
from apisix_openai_triton.runner.workers import WorkerContext, resolve_workers
from apisix_openai_triton.runner.config import ConfigError, resolve

RAW = (("plugin-a", '{"x":1}'), ("plugin-b", "{}"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_token_appended_by_one_worker_is_found_by_another(tmp_path: Path) -> None:
    clock = Clock()
    one = SharedConfLog(str(tmp_path), index=0, ttl=60, clock=clock)
    two = SharedConfLog(str(tmp_path), index=1, ttl=60, clock=clock)
    one.append(11, RAW, "route#1#pre#1")
    one.append(13, (("plugin-a", "{}"),), None)
    assert await two.lookup(11) == (RAW, "route#1#pre#1")
    assert await two.lookup(13) == ((("plugin-a", "{}"),), None)
    assert await two.lookup(12) is None  # a true miss
    assert await one.lookup(11) is None  # a worker never recovers its own tokens from the log
    assert (os.stat(tmp_path / FILE_NAME).st_mode & 0o777) == 0o600


async def test_records_older_than_the_ttl_are_ignored(tmp_path: Path) -> None:
    clock = Clock()
    one = SharedConfLog(str(tmp_path), index=0, ttl=60, clock=clock)
    two = SharedConfLog(str(tmp_path), index=1, ttl=60, clock=clock)
    one.append(5, RAW, None)
    clock.now += 61
    assert await two.lookup(5) is None


async def test_a_record_being_written_is_read_once_complete(tmp_path: Path) -> None:
    one = SharedConfLog(str(tmp_path), index=0, ttl=60)
    two = SharedConfLog(str(tmp_path), index=1, ttl=60)
    one.append(7, RAW, None)
    whole = (tmp_path / FILE_NAME).read_bytes()
    (tmp_path / FILE_NAME).write_bytes(whole[:-3])  # as seen mid-write
    assert await two.lookup(7) is None
    with open(tmp_path / FILE_NAME, "ab") as handle:
        handle.write(whole[-3:])
    assert await two.lookup(7) == (RAW, None)


def test_a_replacement_worker_continues_after_its_predecessors_tokens(tmp_path: Path) -> None:
    registry = PluginRegistry.discover(builtins=False, installed=False)
    first = ConfStore(registry)
    WorkerContext(1, 3, 2**32 - 4, first, str(tmp_path), os.getppid()).prepare()
    minted = [first.minter.mint() for _ in range(4)]
    assert minted == [2**32 - 3, 3, 6, 9]  # start + 1 + 3k, wrapping past 0 (never minted)
    for token in minted:
        assert first.on_prepare is not None
        first.on_prepare(token, RAW, None)
    second = ConfStore(registry)
    WorkerContext(1, 3, 2**32 - 4, second, str(tmp_path), os.getppid()).prepare()
    assert [second.minter.mint() for _ in range(2)] == [12, 15]
    other = ConfStore(registry)
    WorkerContext(2, 3, 2**32 - 4, other, str(tmp_path), os.getppid()).prepare()
    assert other.minter.mint() == 2**32 - 2  # index 2 has not minted yet: it starts fresh


def test_workers_setting() -> None:
    assert resolve_workers("auto") == (os.cpu_count() or 1)
    assert resolve_workers("3") == 3 and resolve_workers(2) == 2
    for bad in ("0", "-1", "many", True, 1000, 1.5):
        with pytest.raises(ValueError):
            resolve_workers(bad)
    assert resolve({"workers": "auto"}, env={}).workers == (os.cpu_count() or 1)
    with pytest.raises(ConfigError, match="--workers"):
        resolve({"workers": "zero"}, env={})


def test_metrics_listen_setting(tmp_path: Path) -> None:
    assert resolve({"metrics_listen": "127.0.0.1:9091"}, env={}).metrics_listen == "127.0.0.1:9091"
    assert resolve({}, env={}).metrics_listen is None
    for bad in ("9091", "host:", "host:99999"):
        with pytest.raises(ConfigError, match="--metrics-listen"):
            resolve({"metrics_listen": bad}, env={})
    config = tmp_path / "c.yaml"
    config.write_text("workers: 2\nmetrics_listen: '[::1]:9100'\n")
    loaded = resolve({"config": str(config)}, env={})
    assert loaded.workers == 2 and loaded.metrics_listen == "[::1]:9100"
