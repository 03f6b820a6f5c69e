"""``apisix-openai-triton bench``: load the runner like a gateway does and report what it costs.

C keep-alive connections (one call in flight on each, like the gateway's pool) drive one workload
against a runner: one already running (``--socket``) or one the bench starts (the default), whose
CPU time and memory it then reads from /proc, workers included. The same client can drive a
minimal asyncio server that answers precomputed frames (``--workload baseline``, or
``--baseline`` next to another workload): figures are reported absolute and as a ratio to it.
``--matrix`` runs the whole published matrix and writes docs/benchmarks.md (see bench_matrix).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, Optional

import orjson

from .bench_client import ClientResult, ClientSpec, run_client_process
from .bench_proc import TreeSnapshot, machine_busy_s, snapshot
from .bench_servers import Server, baseline_command, runner_command
from .bench_workloads import WORKLOADS, WorkloadSpec, fetch_state, state_needed

READY_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """One measurement. ``socket`` set: use that runner; unset: start one (or the baseline)."""

    workload: str = "noop"
    size: str = "-"
    connections: int = 8
    duration: Optional[float] = None
    calls: Optional[int] = None
    rate: Optional[float] = None
    warmup: float = 1.0
    client_procs: int = 1
    socket: Optional[str] = None
    runner_pid: Optional[int] = None
    workers: Optional[int] = None
    runner_args: tuple[str, ...] = ()
    verify_all: bool = False
    uvloop: bool = True


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What ``--json`` prints (times in ms, CPU in s, memory in MB)."""

    workload: str
    size: str
    connections: int
    workers: int
    client_procs: int
    rate: Optional[float]
    calls: int
    ok: int
    failed: int
    verified: int
    first_failure: Optional[str]
    elapsed_s: float
    calls_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_s: float
    runner_cpu_s: Optional[float] = None
    runner_cpu_us_per_call: Optional[float] = None
    runner_procs: Optional[int] = None
    runner_peak_rss_mb: Optional[float] = None
    runner_rss_start_mb: Optional[float] = None
    runner_rss_end_mb: Optional[float] = None
    baseline_calls_per_s: Optional[float] = None
    other_cpu_s: Optional[float] = None
    """CPU that the rest of the machine used during the run (known when the runner's is)."""

    @property
    def ratio(self) -> Optional[float]:
        """calls/s as a fraction of the baseline server's in the same run."""
        if not self.baseline_calls_per_s:
            return None
        return self.calls_per_s / self.baseline_calls_per_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio_to_baseline": self.ratio}


def percentile(sorted_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds (0 for no samples)."""
    if not sorted_ns:
        return 0.0
    rank = max(int(-(-q * len(sorted_ns) // 1)) - 1, 0)
    return sorted_ns[min(rank, len(sorted_ns) - 1)] / 1e6


def _split(total: Optional[float], parts: int) -> list[Optional[float]]:
    return [None if total is None else total / parts for _ in range(parts)]


def _split_int(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _client_specs(opts: BenchOptions, socket_path: str, workload: WorkloadSpec) -> list[ClientSpec]:
    procs = max(1, min(opts.client_procs, opts.connections))
    conns = _split_int(opts.connections, procs)
    calls: list[Optional[int]] = (
        [None] * procs if opts.calls is None else list(_split_int(opts.calls, procs)))
    rates = _split(opts.rate, procs)
    duration = opts.duration if opts.calls is None else None
    return [
        ClientSpec(socket_path, workload, conns[i], duration, calls[i], rates[i], opts.warmup,
                   opts.verify_all, opts.uvloop)
        for i in range(procs)
    ]


Window = tuple[list[ClientResult], Optional[TreeSnapshot], Optional[TreeSnapshot], float]


def _run_clients(specs: list[ClientSpec], pid: Optional[int]) -> Window:
    """Start the client processes; read the runner and the machine between "all ready" and
    "all done" (the results, the runner before and after, the machine's CPU seconds)."""
    ctx = multiprocessing.get_context("spawn")
    pipes = []
    procs = []
    try:
        for spec in specs:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=run_client_process, args=(spec, child_end), daemon=True)
            proc.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(proc)
        for pipe in pipes:
            _expect(pipe, "ready")
        before = snapshot(pid) if pid else None
        busy = machine_busy_s()
        for pipe in pipes:
            pipe.send("go")
        results = [_expect(pipe, "result") for pipe in pipes]
        busy = machine_busy_s() - busy
        after = snapshot(pid) if pid else None
        return results, before, after, busy
    finally:
        for pipe in pipes:
            pipe.close()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def _expect(pipe: Connection, what: str) -> Any:
    if not pipe.poll(READY_TIMEOUT if what == "ready" else None):
        raise RuntimeError(f"a client process did not get {what} within {READY_TIMEOUT:.0f} s")
    kind, value = pipe.recv()
    if kind == "error":
        raise RuntimeError(f"client process failed: {value}")
    if kind != what:
        raise RuntimeError(f"client process said {kind!r}, expected {what!r}")
    return value


def _aggregate(opts: BenchOptions, window: Window, workers: int) -> BenchResult:
    results, before, after, busy = window
    latencies = array("q")
    for r in results:
        latencies.frombytes(r.latencies_ns)
    ordered = sorted(latencies)
    calls = sum(r.calls for r in results)
    ok = sum(r.ok for r in results)
    rate = sum(r.ok / r.elapsed_s for r in results if r.elapsed_s > 0)
    failures = [r.first_failure for r in results if r.first_failure]
    client_cpu = sum(r.client_cpu_s for r in results)
    runner: dict[str, Any] = {}
    if before is not None and after is not None:
        cpu = after.cpu_s - before.cpu_s
        runner = dict(
            other_cpu_s=max(busy - cpu - client_cpu, 0.0),
            runner_cpu_s=cpu,
            runner_cpu_us_per_call=cpu / ok * 1e6 if ok else None,
            runner_procs=len(after.procs),
            runner_peak_rss_mb=after.max_hwm_kb / 1024,
            runner_rss_start_mb=before.rss_kb / 1024,
            runner_rss_end_mb=after.rss_kb / 1024,
        )
    return BenchResult(
        workload=opts.workload, size=opts.size, connections=opts.connections, workers=workers,
        client_procs=len(results), rate=opts.rate, calls=calls, ok=ok, failed=calls - ok,
        verified=sum(r.verified for r in results), first_failure=failures[0] if failures else None,
        elapsed_s=max(r.elapsed_s for r in results), calls_per_s=rate,
        p50_ms=percentile(ordered, 0.50), p90_ms=percentile(ordered, 0.90),
        p99_ms=percentile(ordered, 0.99), max_ms=ordered[-1] / 1e6 if ordered else 0.0,
        client_cpu_s=client_cpu, **runner,
    )


def _default_size(opts: BenchOptions) -> BenchOptions:
    if opts.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {opts.workload!r}; choose from {', '.join(WORKLOADS)}")
    size = WORKLOADS[opts.workload][0] if opts.size == "-" else opts.size
    if size not in WORKLOADS[opts.workload]:
        raise ValueError(f"workload {opts.workload} takes --size "
                         f"{' or '.join(WORKLOADS[opts.workload])}, not {size}")
    if opts.duration is None and opts.calls is None:
        opts = replace(opts, duration=5.0)
    return replace(opts, size=size)


def _measure_on(opts: BenchOptions, socket_path: str, pid: Optional[int], workers: int
                ) -> BenchResult:
    spec = WorkloadSpec("noop" if opts.workload == "baseline" else opts.workload, opts.size)
    if state_needed(spec):
        stream = opts.size == "sse500"
        spec = replace(spec, state=asyncio.run(fetch_state(socket_path, stream=stream)))
    window = _run_clients(_client_specs(opts, socket_path, spec), pid)
    return _aggregate(opts, window, workers)


def measure(opts: BenchOptions) -> BenchResult:
    """Run one measurement as ``opts`` says, starting (and stopping) the server if needed."""
    opts = _default_size(opts)
    workers = opts.workers or 1
    if opts.workload == "baseline":
        with Server(lambda path: baseline_command(path, procs=workers, use_uvloop=opts.uvloop)) as srv:
            return _measure_on(opts, srv.socket_path, srv.pid, workers)
    if opts.socket is not None:
        return _measure_on(opts, opts.socket.removeprefix("unix:"), opts.runner_pid, workers)
    with Server(lambda path: runner_command(path, workers=opts.workers, use_uvloop=opts.uvloop,
                                            extra=opts.runner_args)) as srv:
        try:
            return _measure_on(opts, srv.socket_path, srv.pid, workers)
        except (RuntimeError, OSError) as exc:
            raise RuntimeError(f"{exc}\nthe runner's log ends with:\n{srv.log_tail()}") from exc


def _fmt(value: Optional[float], spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


TABLE_COLUMNS = ("workload", "size", "C", "workers", "calls/s", "x baseline", "p50 ms", "p90 ms",
                 "p99 ms", "runner CPU µs/call", "client CPU s", "other CPU s",
                 "runner peak RSS MB", "RSS start→end MB", "failed")


def table_row(r: BenchResult) -> list[str]:
    return [
        r.workload, r.size, str(r.connections), str(r.workers), f"{r.calls_per_s:,.0f}",
        _fmt(r.ratio), _fmt(r.p50_ms, ".3f"), _fmt(r.p90_ms, ".3f"), _fmt(r.p99_ms, ".3f"),
        _fmt(r.runner_cpu_us_per_call, ".0f"), _fmt(r.client_cpu_s, ".1f"),
        _fmt(r.other_cpu_s, ".1f"), _fmt(r.runner_peak_rss_mb, ".1f"),
        "n/a" if r.runner_rss_start_mb is None
        else f"{r.runner_rss_start_mb:.1f}→{_fmt(r.runner_rss_end_mb, '.1f')}",
        f"{r.failed}/{r.calls}",
    ]


def format_table(results: Sequence[BenchResult]) -> str:
    """A plain-text table for the terminal."""
    rows = [list(TABLE_COLUMNS)] + [table_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)


def _options(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        workload=args.workload, size=args.size, connections=args.connections,
        duration=args.duration, calls=args.calls, rate=args.rate, warmup=args.warmup,
        client_procs=args.client_procs, socket=args.socket, runner_pid=args.runner_pid,
        workers=args.workers, runner_args=tuple(args.runner_arg), verify_all=args.verify == "all",
        uvloop=not args.no_uvloop,
    )


def _command(args: argparse.Namespace) -> int:
    if args.spawn and args.socket:
        print("bench: --spawn and --socket exclude each other", file=sys.stderr)
        return 2
    if args.matrix:
        from .bench_matrix import run_matrix
        return run_matrix(args)
    try:
        opts = _options(args)
        results = [measure(opts)]
        if args.baseline and opts.workload != "baseline":
            base = measure(replace(opts, workload="baseline", size="-", socket=None))
            results = [replace(results[0], baseline_calls_per_s=base.calls_per_s), base]
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps([r.to_json() for r in results],
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_table(results))
        for r in results:
            if r.first_failure:
                print(f"{r.workload}: first failure: {r.first_failure}")
    return 0 if all(r.failed == 0 for r in results) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` flags (shared by the console script and ``python -m``)."""
    what = parser.add_argument_group("what to measure")
    what.add_argument("--workload", default="noop", choices=list(WORKLOADS),
                      help="noop: a plugin that does nothing (the protocol floor); openai-request: "
                      "PrepareConf once, then HTTPReqCall + ReqBody + Rewrite; openai-response: "
                      "HTTPRespCall + state Var + RespBody; openai-full: both phases per call; "
                      "baseline: a minimal asyncio server answering precomputed frames "
                      "(default: %(default)s)")
    what.add_argument("--size", default="-",
                      help="openai-request/-full: 1k or 200k chat; openai-response: 2k generate "
                      "answer or sse500 (a 500-event stream). Default: the first of these")
    what.add_argument("-c", "--connections", type=int, default=8,
                      help="keep-alive connections, one call in flight on each (default: %(default)s)")
    span = what.add_mutually_exclusive_group()
    span.add_argument("--duration", type=float, help="seconds to measure (default 5)")
    span.add_argument("--calls", type=int, help="measure exactly this many calls instead")
    what.add_argument("--rate", type=float,
                      help="total calls/s to offer (default: as fast as the runner answers)")
    what.add_argument("--warmup", type=float, default=1.0,
                      help="seconds of unmeasured calls first (default: %(default)s)")
    what.add_argument("--client-procs", type=int, default=1,
                      help="client processes sharing the connections (default: %(default)s)")
    what.add_argument("--verify", choices=("sample", "all"), default="sample",
                      help="decode and check every final answer (all), or the first per "
                      "connection and the type of every other (sample, default)")
    what.add_argument("--baseline", action="store_true",
                      help="also measure the baseline server with the same settings; report the ratio")
    target = parser.add_argument_group("which runner")
    target.add_argument("--socket", metavar="PATH",
                        help="a running runner's socket (must have the bench-noop plugin for noop, "
                        "and the OpenAI plugins for the openai workloads). Default: start one")
    target.add_argument("--spawn", action="store_true",
                        help="start the runner as a subprocess (the default without --socket)")
    target.add_argument("--runner-pid", type=int,
                        help="with --socket: read this process tree's CPU and memory")
    target.add_argument("--workers", type=int,
                        help="started runner: pass --workers N (baseline: N processes)")
    target.add_argument("--runner-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the started runner (repeatable)")
    target.add_argument("--no-uvloop", action="store_true",
                        help="stdlib event loop in the client, the started runner and the baseline")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="machine-readable results on stdout")
    matrix = parser.add_argument_group("the published matrix (docs/benchmarks.md)")
    matrix.add_argument("--matrix", action="store_true",
                        help="run the whole matrix and write docs/benchmarks.md and the plot")
    matrix.add_argument("--docs", default="docs/benchmarks.md",
                        help="markdown file whose marked section --matrix rewrites")
    matrix.add_argument("--plot", default="docs/bench-connections.png",
                        help="PNG written by --matrix (needs the 'bench' extra: matplotlib)")
    matrix.add_argument("--repeat", type=int, default=1,
                        help="--matrix: make each measurement N times and keep the one least "
                        "disturbed by other processes (for shared machines; default: %(default)s)")
    matrix.add_argument("--growth-calls", type=int, default=1_000_000,
                        help="--matrix: noop calls of the RSS growth check (0 skips it; "
                        "default: %(default)s)")
    matrix.add_argument("--growth-full-calls", type=int, default=100_000,
                        help="--matrix: openai-full calls of the RSS growth check (0 skips it; "
                        "default: %(default)s)")
    parser.set_defaults(func=_command)


DESCRIPTION = """\
Load the runner like APISIX does (C keep-alive connections, one call in flight on each) and
report calls/s, p50/p90/p99 latency, the runner's CPU time per call, peak and start/end RSS
(workers included), and the client's own CPU. Without --socket a runner is started for the
run. --baseline (or --workload baseline) measures a minimal asyncio server answering precomputed
frames with the same client, and reports the ratio. --matrix runs everything docs/benchmarks.md
publishes and rewrites it."""


def add_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds ``bench`` to the console script's commands."""
    parser = subparsers.add_parser(
        "bench", help="benchmark the runner like a gateway loads it",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apisix_openai_triton.tools.bench",
                                     description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
