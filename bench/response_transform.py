"""Responses per second of the triton-to-openai pure conversion (parse Triton, build OpenAI).

One process, one core, no socket: the plugin's own cost per response. Workloads: a 2 KB generate
answer, a 500-event generate_stream answer (as chat stream and as non-stream), and the same
stream with characters split across events (the lenient-decoder path).
Run: ``.venv/bin/python bench/response_transform.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import time

import orjson

from apisix_openai_triton.plugins.response_conf import parse_response_conf
from apisix_openai_triton.plugins.response_transform import convert
from apisix_openai_triton.plugins.state import CallState

_TEXT = "The quick brown fox jumps over the lazy dog; café, naïve, 東京 — more words follow. "


def state(stream: bool, api: str) -> CallState:
    return CallState("my-model", "chat", "chatcmpl-bench", 1_700_000_000, stream, stream, 1, 600,
                     "vllm", api, ("</s>",))  # type: ignore[arg-type]


def generate_answer(target_bytes: int) -> bytes:
    text = (_TEXT * (target_bytes // len(_TEXT) + 1))[: target_bytes - 150]
    return orjson.dumps({"model_name": "llama", "model_version": "1", "text_output": text,
                         "finish_reason": "stop", "num_input_tokens": 42, "num_output_tokens": 400})


def stream_answer(events: int) -> bytes:
    words = _TEXT.split(" ")
    return b"".join(
        b"data: " + orjson.dumps({
            "model_name": "llama", "model_version": "1", "text_output": words[i % len(words)] + " ",
            "finish_reason": "stop" if i == events - 1 else "None",
            "num_input_tokens": 42, "num_output_tokens": 1,
        }) + b"\n\n"
        for i in range(events)
    )


def split_char_stream(events: int) -> bytes:
    """Every other event ends inside a 3-byte character that the next event completes."""
    euro = "€".encode()
    parts = []
    for i in range(events):
        text = (euro[1:] if i % 2 else b"") + b"word " + (euro[:1] if i % 2 == 0 else b"")
        parts.append(b'data: {"text_output":"' + text + b'","num_output_tokens":1}\n\n')
    return b"".join(parts)


def measure(st: CallState, body: bytes, seconds: float) -> tuple[float, float, int]:
    """Responses per wall second, CPU microseconds per response (a shared box skews wall time)."""
    conf = parse_response_conf("{}")
    out = convert(conf, st, 200, body)
    assert out.status == 200, out.body[:200]
    count = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(20):
            convert(conf, st, 200, body)
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            cpu = time.process_time() - cpu_start
            return count / (now - start), cpu / count * 1e6, len(out.body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per workload")
    args = parser.parse_args()
    workloads = [
        ("generate 2 KB -> chat.completion", state(False, "generate"), generate_answer(2048)),
        ("generate_stream 500 events -> chat stream", state(True, "generate_stream"), stream_answer(500)),
        ("generate_stream 500 events -> chat.completion", state(False, "generate_stream"),
         stream_answer(500)),
        ("500 events, chars split across events -> stream", state(True, "generate_stream"),
         split_char_stream(500)),
    ]
    print(f"{'workload':50} {'in bytes':>9} {'out bytes':>10} {'resp/s':>8} {'cpu us/resp':>12}")
    for name, st, body in workloads:
        rate, cpu_us, out_len = measure(st, body, args.seconds)
        print(f"{name:50} {len(body):>9} {out_len:>10} {rate:>8.0f} {cpu_us:>12.1f}")


if __name__ == "__main__":
    main()
