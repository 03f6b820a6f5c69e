"""Runner metrics in the Prometheus text format, cheap enough to leave on.

Off by default (``--metrics-listen`` turns them on). On the hot path a call costs a few integer
increments into plain dicts and lists of this process; nothing is locked, written or sent per
call. With several workers, each worker writes a snapshot of its counters to a file in the
runner's private directory once a second (when something changed), and whichever worker
accepts a scrape writes its own snapshot and sums every worker's file: no process ever waits
on another, at the price of other workers' figures being up to a second old. A
replacement worker starts from its predecessor's last snapshot, so counters never go down.

Hand-written rather than ``prometheus_client``: that library's multiprocess mode writes an
mmap'd file on every increment and needs an environment variable and cleanup; the exposition
format itself is a few lines of text.

Plugins report token usage through ``count_tokens``, a no-op when metrics are off.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import orjson

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
"""Upper bounds (seconds) of the call latency histogram; ``+Inf`` is implied."""

CALL_TYPES = ("prepare_conf", "http_req_call", "http_resp_call")
ERROR_KINDS = (
    "conf_token_not_found", "conf_rejected", "plugin_error", "protocol_violation", "answer_too_large",
)
PREFIX = "apisix_openai_triton_runner_"
MAX_MODELS = 256
"""Distinct model labels kept for token counts (the model name comes from request data)."""


class Metrics:
    """The counters of one process; ``snapshot``/``merge``/``render`` aggregate across workers."""

    __slots__ = ("calls", "plugin_calls", "errors", "buckets", "latency_sum", "tokens", "worker",
                 "conf_store_size", "restarts", "_bounds")

    def __init__(self, worker: str = "0") -> None:
        self.worker = worker
        self.calls: dict[str, int] = dict.fromkeys(CALL_TYPES, 0)
        #: (phase, plugin name) -> calls into that plugin's filter
        self.plugin_calls: dict[tuple[str, str], int] = {}
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        #: call type -> count per bucket (last slot: over the largest bound)
        self.buckets: dict[str, list[int]] = {t: [0] * (len(LATENCY_BUCKETS) + 1) for t in CALL_TYPES}
        self.latency_sum: dict[str, float] = dict.fromkeys(CALL_TYPES, 0.0)
        #: model -> [prompt tokens, completion tokens]
        self.tokens: dict[str, list[int]] = {}
        self.conf_store_size = 0
        self.restarts = 0
        self._bounds = LATENCY_BUCKETS

    # --- the hot path --------------------------------------------------------------------------

    def observe(self, call_type: str, seconds: float) -> None:
        """One call of ``call_type`` that took ``seconds`` from its frame to its answer."""
        self.calls[call_type] += 1
        self.buckets[call_type][bisect.bisect_left(self._bounds, seconds)] += 1
        self.latency_sum[call_type] += seconds

    def plugin_call(self, phase: str, name: str) -> None:
        key = (phase, name)
        calls = self.plugin_calls
        calls[key] = calls.get(key, 0) + 1

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def add_tokens(self, model: str, prompt: int, completion: int) -> None:
        counts = self.tokens.get(model)
        if counts is None:
            if len(self.tokens) >= MAX_MODELS:
                model = "other"
                counts = self.tokens.setdefault(model, [0, 0])
            else:
                counts = self.tokens[model] = [0, 0]
        counts[0] += max(prompt, 0)
        counts[1] += max(completion, 0)

    # --- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything countable, as JSON-ready data (what a worker writes for the others)."""
        return {
            "worker": self.worker,
            "calls": self.calls,
            "plugin_calls": [[p, n, c] for (p, n), c in self.plugin_calls.items()],
            "errors": self.errors,
            "buckets": self.buckets,
            "latency_sum": self.latency_sum,
            "tokens": self.tokens,
            "conf_store_size": self.conf_store_size,
            "restarts": self.restarts,
        }

    def merge(self, snap: Mapping[str, Any]) -> None:
        """Add a snapshot's counters to these (gauges are kept per worker, see ``render``)."""
        for key, value in snap.get("calls", {}).items():
            if key in self.calls:
                self.calls[key] += int(value)
        for phase, name, count in snap.get("plugin_calls", []):
            self.plugin_calls[(phase, name)] = self.plugin_calls.get((phase, name), 0) + int(count)
        for key, value in snap.get("errors", {}).items():
            if key in self.errors:
                self.errors[key] += int(value)
        for key, counts in snap.get("buckets", {}).items():
            mine = self.buckets.get(key)
            if mine is not None and len(counts) == len(mine):
                for i, count in enumerate(counts):
                    mine[i] += int(count)
        for key, value in snap.get("latency_sum", {}).items():
            if key in self.latency_sum:
                self.latency_sum[key] += float(value)
        for model, (prompt, completion) in snap.get("tokens", {}).items():
            self.add_tokens(str(model), int(prompt), int(completion))
        self.restarts += int(snap.get("restarts", 0))


def render(total: Metrics, store_sizes: Iterable[tuple[str, int]]) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of merged counters."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> str:
        full = PREFIX + name
        out.append(f"# HELP {full} {help_text}")
        out.append(f"# TYPE {full} {kind}")
        return full

    name = family("calls_total", "counter", "Calls answered, by message type.")
    for call_type, count in total.calls.items():
        out.append(f'{name}{{type="{call_type}"}} {count}')
    name = family("plugin_calls_total", "counter", "Plugin filter invocations, by phase and plugin.")
    for (phase, plugin), count in sorted(total.plugin_calls.items()):
        out.append(f'{name}{{phase="{phase}",plugin="{_label(plugin)}"}} {count}')
    name = family("errors_total", "counter", "Error answers and dropped connections, by kind.")
    for kind, count in total.errors.items():
        out.append(f'{name}{{kind="{kind}"}} {count}')
    name = family("call_duration_seconds", "histogram",
                  "Time from a call's frame to its answer, ExtraInfo round trips included.")
    for call_type, counts in total.buckets.items():
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts):
            running += count
            le = "+Inf" if bound == math.inf else repr(bound)
            out.append(f'{name}_bucket{{type="{call_type}",le="{le}"}} {running}')
        out.append(f'{name}_sum{{type="{call_type}"}} {total.latency_sum[call_type]!r}')
        out.append(f'{name}_count{{type="{call_type}"}} {running}')
    name = family("conf_store_confs", "gauge", "Route confs held, per worker.")
    for worker, size in store_sizes:
        out.append(f'{name}{{worker="{worker}"}} {size}')
    name = family("worker_restarts_total", "counter", "Workers replaced after they died.")
    out.append(f"{name} {total.restarts}")
    name = family("tokens_total", "counter", "OpenAI tokens reported by the plugins, by model and kind.")
    for model, (prompt, completion) in sorted(total.tokens.items()):
        out.append(f'{name}{{model="{_label(model)}",kind="prompt"}} {prompt}')
        out.append(f'{name}{{model="{_label(model)}",kind="completion"}} {completion}')
    return ("\n".join(out) + "\n").encode()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- where the snapshots live ------------------------------------------------------------------


def snapshot_path(directory: str, worker: str) -> str:
    return os.path.join(directory, f"metrics-{worker}.json")


def write_snapshot(directory: str, metrics: Metrics) -> None:
    """Replace this worker's snapshot file atomically (readers never see half of one)."""
    final = snapshot_path(directory, metrics.worker)
    temporary = f"{final}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(orjson.dumps(metrics.snapshot()))
    os.replace(temporary, final)


def read_snapshots(directory: str) -> list[dict[str, Any]]:
    """Every snapshot in ``directory`` (a half-gone or unreadable one is skipped)."""
    snaps: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return snaps
    for file_name in names:
        if not (file_name.startswith("metrics-") and file_name.endswith(".json")):
            continue
        try:
            with open(os.path.join(directory, file_name), "rb") as handle:
                snap = orjson.loads(handle.read())
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(snap, dict):
            snaps.append(snap)
    return snaps


def exposition(live: Metrics, directory: Optional[str]) -> bytes:
    """The whole runner's metrics: ``live`` alone, or every worker's snapshot in ``directory``.

    With workers, the answering worker first writes its own snapshot and then sums the files,
    so that successive scrapes never go down, whichever worker answers them: every file only
    grows, and each scrape includes the file it just wrote.
    """
    if directory is None:
        return render(live, [(live.worker, live.conf_store_size)])
    write_snapshot(directory, live)
    total = Metrics(live.worker)
    sizes: list[tuple[str, int]] = []
    for snap in read_snapshots(directory):
        total.merge(snap)
        worker = str(snap.get("worker", "?"))
        if worker != "supervisor":
            sizes.append((worker, int(snap.get("conf_store_size", 0))))
    return render(total, sorted(sizes))


# --- the API plugins call ----------------------------------------------------------------------

_active: Optional[Metrics] = None


def activate(metrics: Optional[Metrics]) -> None:
    """Make ``metrics`` the process's counters (``None``: metrics off, the default)."""
    global _active
    _active = metrics


def active() -> Optional[Metrics]:
    return _active


def count_tokens(model: str, prompt: int, completion: int) -> None:
    """Count one request's OpenAI token usage for ``model``; a no-op when metrics are off."""
    if _active is not None:
        _active.add_tokens(model, prompt, completion)
