"""Requests per second of the openai-to-triton pure transform (parse, validate, render, build).

One process, one core, no socket: this is the plugin's own cost per request, the figure to
compare with the runner's per-call overhead. Run: ``.venv/bin/python bench/request_transform.py``.
"""

from __future__ import annotations

import argparse
import time

import orjson

from apisix_openai_triton.plugins.request_conf import parse_request_conf
from apisix_openai_triton.plugins.request_transform import transform

CONFS = {
    "llama3/generic": '{"model": "m"}',
    "llama3.1/vllm": '{"model": "m", "template": "llama3.1", "backend": "vllm"}',
    "chatml/tensorrtllm": '{"model": "m", "template": "chatml", "backend": "tensorrtllm"}',
    "chat_template/vllm": (
        '{"model": "m", "backend": "vllm", "chat_template": "{% for m in messages %}'
        '<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>\\n{% endfor %}'
        '<|im_start|>assistant\\n"}'
    ),
}

_TEXT = ("The quick brown fox jumps over the lazy dog; café, naïve, 東京 — and a few more words "
         "to make the sentence realistic. ")


def chat_body(target_bytes: int) -> bytes:
    """A multi-turn chat of about ``target_bytes`` (a system prompt, then user/assistant turns)."""
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    turn = _TEXT * 4
    while len(orjson.dumps(messages)) < target_bytes:
        role = "user" if messages[-1]["role"] != "user" else "assistant"
        messages.append({"role": role, "content": turn})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "Summarise."})
    return orjson.dumps({"model": "m", "messages": messages, "temperature": 0.7, "max_tokens": 128,
                         "stop": ["\n\nUser:"], "stream": True,
                         "stream_options": {"include_usage": True}})


def measure(conf_text: str, body: bytes, seconds: float, rounds: int = 5) -> float:
    """Best of ``rounds`` (a shared machine only ever makes a round slower, never faster)."""
    conf = parse_request_conf(conf_text)
    transform(conf, "chat", body)  # warm-up, and a check that the body is valid
    best = 0.0
    for _ in range(rounds):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        while True:
            for _ in range(20):
                transform(conf, "chat", body)
            count += 20
            now = time.perf_counter()
            if now >= deadline:
                best = max(best, count / (now - start))
                break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    bodies = {"1 KB": chat_body(1024), "200 KB": chat_body(200 * 1024)}
    print(f"{'conf':<22} {'body':>8} {'bytes':>8} {'req/s':>10} {'us/req':>8}")
    for name, conf_text in CONFS.items():
        for label, body in bodies.items():
            rate = measure(conf_text, body, args.seconds)
            print(f"{name:<22} {label:>8} {len(body):>8} {rate:>10,.0f} {1e6 / rate:>8.1f}")


if __name__ == "__main__":
    main()
