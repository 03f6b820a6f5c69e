"""Conf store: tokens, parse-once, expiry after last use, dedup, and the cross-worker hook."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from apisix_openai_triton.runner import ConfError, Plugin, Request, Stop
from apisix_openai_triton.runner.conf_store import ConfRejected, ConfStore, RawConf, TokenMinter
from apisix_openai_triton.runner.registry import PluginRegistry
from apisix_openai_triton.runner.testkit import Conf, run_runner


class Counting(Plugin[Any]):
    name = "counting"

    def __init__(self) -> None:
        self.parsed = 0

    def parse_conf(self, raw: str) -> Any:
        self.parsed += 1
        if raw == "bad":
            raise ConfError("bad conf")
        return raw

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return Stop(200, (), str(conf))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(clock: Clock, plugin: Counting, **kw: Any) -> ConfStore:
    registry = PluginRegistry()
    registry.add(plugin)
    return ConfStore(registry, expire_time=100.0, clock=clock, **kw)


def test_minter_steps_skips_zero_and_wraps() -> None:
    minter = TokenMinter((1 << 32) - 2)
    assert [minter.mint() for _ in range(3)] == [(1 << 32) - 2, (1 << 32) - 1, 1]


def test_workers_mint_disjoint_tokens_without_coordination() -> None:
    start = TokenMinter.random_start()
    workers = [TokenMinter(start, index=i, stride=4) for i in range(4)]
    minted = [w.mint() for _ in range(1000) for w in workers]
    assert len(set(minted)) == len(minted) and 0 not in minted
    with pytest.raises(ValueError):
        TokenMinter(start, index=4, stride=4)


def test_random_starts_differ() -> None:
    assert len({TokenMinter.random_start() for _ in range(8)}) > 1


def test_conf_is_parsed_once_at_prepare() -> None:
    plugin = Counting()
    store = _store(Clock(), plugin)
    token = store.prepare([("counting", "a"), ("counting", "b")])
    for _ in range(5):
        entry = store.get(token)
        assert entry is not None
    assert plugin.parsed == 2
    assert entry is not None and [conf for _, _, conf in entry.request_chain] == ["a", "b"]


def test_rejections_name_plugin_and_reason() -> None:
    store = _store(Clock(), Counting())
    with pytest.raises(ConfRejected, match="'counting': bad conf"):
        store.prepare([("counting", "bad")])
    with pytest.raises(ConfRejected, match="'other': no such plugin"):
        store.prepare([("other", "{}")])
    assert len(store) == 0


def test_expiry_counts_from_last_use() -> None:
    clock = Clock()
    store = _store(clock, Counting())  # ttl = 1.2 * 100 = 120 s
    kept = store.prepare([("counting", "kept")])
    dropped = store.prepare([("counting", "dropped")])
    clock.now += 100
    assert store.get(kept) is not None  # a hit refreshes (at the next sweep)
    store.sweep()
    clock.now += 100  # dropped: idle 200 s; kept: idle 100 s since its use
    assert store.sweep() == 1
    assert store.get(dropped) is None and store.get(kept) is not None
    store.sweep()
    clock.now += 121
    assert store.sweep() == 1 and len(store) == 0


def test_dedup_by_key_returns_the_same_token_for_the_same_conf() -> None:
    plugin = Counting()
    store = _store(Clock(), plugin)
    one = store.prepare([("counting", "x")], key="route#1#ext-plugin-pre-req#1")
    assert store.prepare([("counting", "x")], key="route#1#ext-plugin-pre-req#1") == one
    assert store.prepare([("counting", "y")], key="route#1#ext-plugin-pre-req#1") != one
    assert store.prepare([("counting", "x")]) != one  # no key: no dedup
    assert plugin.parsed == 3


async def test_on_miss_hook_recovers_a_token_minted_elsewhere() -> None:
    plugin = Counting()
    elsewhere = _store(Clock(), plugin)
    token = elsewhere.prepare([("counting", "shared")], key="k")
    published: dict[int, tuple[RawConf, Optional[str]]] = {}

    async def ask_siblings(wanted: int) -> Optional[tuple[RawConf, Optional[str]]]:
        return published.get(wanted)

    here = _store(Clock(), plugin, on_miss=ask_siblings)
    assert await here.recover(token) is None
    published[token] = elsewhere.get(token).raw, "k"  # type: ignore[union-attr]
    entry = await here.recover(token)
    assert entry is not None and here.get(token) is entry


async def test_on_prepare_hook_sees_every_minted_token() -> None:
    seen: list[int] = []
    store = _store(Clock(), Counting(), on_prepare=lambda token, raw, key: seen.append(token))
    assert store.prepare([("counting", "a")]) == seen[-1]


async def test_runner_sweeps_expired_confs_so_calls_get_token_not_found() -> None:
    clock = Clock()
    async with run_runner(plugins=[Counting], expire_time=10.0, clock=clock) as runner, \
            runner.client() as gateway:
        conf = Conf.of([("counting", "v1")])
        await gateway.request(conf)
        stale = gateway.token(conf)
        runner.store.sweep()  # the periodic sweep notes the use
        clock.now += 13  # > 1.2 x 10 s idle
        assert runner.store.sweep() == 1
        assert runner.store.get(stale or 0) is None
        outcome = await gateway.request(conf)  # CONF_TOKEN_NOT_FOUND, re-prepare, retry
        assert outcome.response is not None and outcome.response.body == b"v1"
        assert gateway.token(conf) != stale


def test_store_is_capped_and_drops_the_oldest_conf(caplog: pytest.LogCaptureFixture) -> None:
    """A local peer spamming PrepareConf cannot grow the store without bound."""
    store = _store(Clock(), Counting(), max_confs=3)
    tokens = [store.prepare([("counting", f"c{i}")], key=f"k{i}") for i in range(5)]
    assert len(store) == 3
    assert store.get(tokens[0]) is None and store.get(tokens[1]) is None
    assert all(store.get(t) is not None for t in tokens[2:])
    # the dropped conf's key no longer dedups to a dead token: preparing it again works
    again = store.prepare([("counting", "c0")], key="k0")
    assert again not in tokens and store.get(again) is not None
    assert sum("the cap" in r.getMessage() for r in caplog.records) == 1
