"""Smoke tests of ``bench``: its client against a real runner, and its numbers add up.

Not timed: the assertions are about counting and ordering, which hold on any machine.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from apisix_openai_triton.tools import bench
from apisix_openai_triton.tools.bench import BenchOptions, BenchResult, measure, percentile
from apisix_openai_triton.tools.bench_workloads import (
    WorkloadSpec, build_workload, chat_body, generate_answer,
)

# The client's own correctness does not depend on the event loop; the stdlib one is always there.
QUICK = BenchOptions(connections=3, calls=240, warmup=0.2, verify_all=True, uvloop=False)


def assert_consistent(r: BenchResult, calls: int) -> None:
    assert r.first_failure is None
    assert r.calls == r.ok == calls
    assert r.failed == 0
    assert r.verified == calls  # --verify all: every final answer decoded and checked
    assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    assert r.calls_per_s > 0 and r.elapsed_s > 0
    assert r.client_cpu_s >= 0


def test_noop_against_a_started_runner_counts_every_call() -> None:
    r = measure(QUICK)
    assert_consistent(r, 240)
    assert (r.workload, r.connections, r.workers) == ("noop", 3, 1)
    assert r.runner_procs is not None and r.runner_procs >= 1
    assert r.runner_cpu_s is not None and r.runner_cpu_s >= 0
    assert r.runner_peak_rss_mb is not None and r.runner_peak_rss_mb >= (r.runner_rss_end_mb or 0) > 0
    assert r.other_cpu_s is not None and r.other_cpu_s >= 0


def test_baseline_and_two_client_processes_split_the_calls() -> None:
    r = measure(BenchOptions(workload="baseline", connections=4, calls=301, warmup=0.1,
                             client_procs=2, verify_all=True, uvloop=False))
    assert_consistent(r, 301)
    assert r.client_procs == 2


@pytest.mark.skipif(importlib.util.find_spec("apisix_openai_triton.plugins.openai_to_triton") is None,
                    reason="the openai-to-triton plugin is not in this tree yet")
@pytest.mark.parametrize("workload,size", [("openai-request", "1k"), ("openai-full", "1k")])
def test_openai_workloads_get_the_answers_they_expect(workload: str, size: str) -> None:
    r = measure(BenchOptions(workload=workload, size=size, connections=2, calls=60, warmup=0.1,
                             verify_all=True, uvloop=False))
    assert_consistent(r, 60)


def test_cli_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench.main(["--workload", "baseline", "--calls", "50", "-c", "2", "--warmup", "0",
                       "--no-uvloop", "--json"])
    assert code == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["ok"] == row["calls"] == 50 and row["ratio_to_baseline"] is None


def test_percentile_is_nearest_rank() -> None:
    ns = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    assert [percentile(ns, q) for q in (0.5, 0.9, 0.99, 1.0)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([], 0.5) == 0.0


def test_payload_sizes_are_what_the_workloads_are_named_for() -> None:
    assert abs(len(chat_body("1k")) - 1024) < 64
    assert abs(len(chat_body("200k")) - 200 * 1024) < 1024
    _, sse = generate_answer("sse500")
    assert sse.count(b"data: ") == 500 and sse.endswith(b"\n\n")
    _, gen = generate_answer("2k")
    assert 1900 < len(gen) < 2200
    with pytest.raises(ValueError, match="needs a signed state"):
        build_workload(WorkloadSpec("openai-response", "2k"))
    with pytest.raises(ValueError, match="takes --size"):
        build_workload(WorkloadSpec("openai-request", "3k"))
