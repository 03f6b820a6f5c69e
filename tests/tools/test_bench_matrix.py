"""``bench --matrix`` bookkeeping: which runs it makes, the doc section it writes, the plot.

The measurements are replaced by a fake so this runs in a second; the client itself is covered
by test_bench_client.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from apisix_openai_triton.tools import bench_matrix
from apisix_openai_triton.tools.bench import BenchOptions, BenchResult

CALLS_PER_S = {"baseline": 40_000.0, "noop": 24_000.0, "openai-request": 6_000.0,
               "openai-response": 5_000.0, "openai-full": 3_000.0}


def fake_run(opts: BenchOptions) -> BenchResult:
    rate = opts.rate or CALLS_PER_S[opts.workload] * (opts.workers or 1)
    calls = opts.calls or int(rate)
    return BenchResult(
        workload=opts.workload, size=opts.size, connections=opts.connections,
        workers=opts.workers or 1, client_procs=1, rate=opts.rate, calls=calls, ok=calls,
        failed=0, verified=calls, first_failure=None, elapsed_s=1.0, calls_per_s=rate,
        p50_ms=0.1, p90_ms=0.2, p99_ms=0.4 if opts.rate else 2.0, max_ms=3.0, client_cpu_s=0.5,
        runner_cpu_s=0.9, runner_cpu_us_per_call=30.0, runner_procs=opts.workers or 1,
        runner_peak_rss_mb=41.0, runner_rss_start_mb=40.0, runner_rss_end_mb=40.2, other_cpu_s=0.01,
    )


@pytest.fixture
def matrix(monkeypatch: pytest.MonkeyPatch) -> bench_matrix.Matrix:
    monkeypatch.setattr(bench_matrix, "runner_supports_workers", lambda: True)
    return bench_matrix.collect(BenchOptions(duration=1.0), 1000, 10, run=fake_run)


def test_matrix_makes_every_published_run(matrix: bench_matrix.Matrix) -> None:
    assert matrix.workers == (1, 2)
    floor_noop = [r for r in matrix.floor if r.workload == "noop"]
    assert sorted((r.connections, r.workers) for r in floor_noop) == [(1, 1), (8, 1), (64, 1), (64, 2)]
    assert all(r.ratio == pytest.approx(0.6) for r in floor_noop)  # 24k / 40k, per worker count
    assert {(r.workload, r.size) for r in matrix.openai} == set(bench_matrix.OPENAI_RUNS)
    assert len(matrix.sweep) == 2 * 2 * len(bench_matrix.SWEEP_CONNECTIONS)
    # half of saturation: the rate offered is half the best openai-full figure of that worker count
    assert [(s, r.rate) for s, r in matrix.half_load] == [(3000.0, 1500.0), (6000.0, 3000.0)]
    assert [(r.workload, r.calls) for r in matrix.growth] == [("noop", 1000), ("openai-full", 10)]


def test_doc_section_replaces_only_the_marked_part(matrix: bench_matrix.Matrix, tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nprose before\n\n{bench_matrix.BEGIN}\nold\n{bench_matrix.END}\n"
                   "\nprose after\n")
    section = bench_matrix.render(matrix, "bench-connections.png", "bench --matrix")
    bench_matrix.write_doc(doc, section)
    bench_matrix.write_doc(doc, section)  # idempotent
    text = doc.read_text()
    assert text.count(bench_matrix.BEGIN) == 1 and "old" not in text
    assert text.startswith("# Benchmarks\n\nprose before") and text.endswith("\nprose after\n")
    assert "![calls/s and p99 against connections](bench-connections.png)" in text
    assert "≥ 50% of the baseline's calls/s: met (from 60%" in text
    assert "p99 < 1 ms at half of saturation" in text and "NOT met" not in text.split("5,000")[0]
    assert "No RSS growth across 1,000 `noop` calls (C=8): met (RSS 40.0 MB" in text


def test_targets_say_not_met_when_missed(matrix: bench_matrix.Matrix) -> None:
    slow = replace(matrix, floor=[replace(r, baseline_calls_per_s=r.calls_per_s * 4)
                                  if r.workload == "noop" else r for r in matrix.floor])
    assert "calls/s: NOT met (from 25%" in "\n".join(bench_matrix._targets(slow))


def test_plot_is_a_png(matrix: bench_matrix.Matrix, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    assert bench_matrix.plot(matrix, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_busy_machine_is_called_out(matrix: bench_matrix.Matrix) -> None:
    quiet = replace(matrix, machine={**matrix.machine, bench_matrix.LOAD_KEY: "0.05 0.10 0.20"})
    busy = replace(matrix, machine={**matrix.machine, bench_matrix.LOAD_KEY: "3.50 2.00 1.00"})
    assert "machine was busy" not in bench_matrix.render(quiet, None, "x")
    assert "load average 3.50 before" in bench_matrix.render(busy, None, "x")
    noisy = replace(quiet, openai=[replace(matrix.openai[0], other_cpu_s=0.5)] + matrix.openai[1:])
    assert "1 of " in bench_matrix.render(noisy, None, "x")


def test_repeat_keeps_the_least_disturbed_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_matrix, "runner_supports_workers", lambda: False)
    noise = iter([0.9, 0.1, 0.5] * 200)

    def noisy_run(opts: BenchOptions) -> BenchResult:
        other = next(noise)
        return replace(fake_run(opts), other_cpu_s=other, calls_per_s=1000 * (1 - other))

    mx = bench_matrix.collect(BenchOptions(duration=1.0), 0, 0, run=noisy_run, repeat=3)
    assert mx.workers == (1,) and not mx.growth
    assert {r.other_cpu_s for r in mx.floor + mx.openai + mx.sweep} == {0.1}
