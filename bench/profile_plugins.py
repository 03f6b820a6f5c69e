"""Where the OpenAI plugins spend their CPU per call, without a socket or an event loop in the way.

Runs what the runner runs for one ``openai-full`` request of the bench (the 1 KB chat, the 2 KB
generate answer, or the 500-event stream): decode the call frame, build the real
``runner.plugin.Request`` / ``Response`` primed as the prefetch would, run the plugin's filter,
build the answer and encode it. Prints µs per call for each phase, then (with ``--profile``) the
cProfile of each phase sorted by own time.

Run: ``.venv/bin/python bench/profile_plugins.py [--calls N] [--profile] [--answer 2k|sse500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable, Coroutine
from typing import Any, Optional

from apisix_openai_triton.plugins.openai_to_triton import OpenAIToTriton
from apisix_openai_triton.plugins.state import STATE_HEADER, STATE_VAR
from apisix_openai_triton.plugins.triton_to_openai import TritonToOpenAI
from apisix_openai_triton.runner.plugin import Request, Response
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import (
    decode_to_runner,
    encode_to_gateway,
    encode_to_runner,
)
from apisix_openai_triton.tools.bench_workloads import (
    CALL_ID,
    REQUEST_CONF,
    RESPONSE_CONF,
    _request_call,
    chat_body,
    generate_answer,
)


async def _never(info: m.Info) -> Optional[bytes]:
    raise AssertionError(f"the filter asked {info!r} although it was prefetched")


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never suspends (everything is prefetched) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the filter suspended")


def request_phase(body: bytes) -> tuple[Callable[[], bytes], str]:
    """One request call (frame bytes in, answer bytes out), and a state header it produced."""
    plugin = OpenAIToTriton()
    conf = plugin.parse_conf(REQUEST_CONF[0][1])
    frame = encode_to_runner(_request_call(1, body))[4:]

    def call() -> bytes:
        msg = decode_to_runner(int(m.MessageType.HTTP_REQ_CALL), frame, True)
        assert isinstance(msg, m.HTTPReqCallRequest)
        request = Request(msg, _never)
        request.prime(body, {})
        stop = _run(plugin.request_filter(conf, request))
        assert stop is None, stop.body
        return encode_to_gateway(m.HTTPReqCallResponse(msg.id, request.to_action()))

    rewrite = m.HTTPReqCallResponse(CALL_ID)
    msg = decode_to_runner(int(m.MessageType.HTTP_REQ_CALL), frame, True)
    assert isinstance(msg, m.HTTPReqCallRequest)
    request = Request(msg, _never)
    request.prime(body, {})
    _run(plugin.request_filter(conf, request))
    rewrite = m.HTTPReqCallResponse(msg.id, request.to_action())
    assert isinstance(rewrite.action, m.Rewrite)
    state = dict(rewrite.action.headers)[STATE_HEADER]
    assert state is not None
    return call, state


def response_phase(answer: str, state: str) -> Callable[[], bytes]:
    plugin = TritonToOpenAI()
    conf = plugin.parse_conf(RESPONSE_CONF[0][1])
    headers, body = generate_answer(answer)
    frame = encode_to_runner(m.HTTPRespCallRequest(CALL_ID, 1, 200, headers))[4:]

    def call() -> bytes:
        msg = decode_to_runner(int(m.MessageType.HTTP_RESP_CALL), frame, True)
        assert isinstance(msg, m.HTTPRespCallRequest)
        response = Response(msg, _never)
        response.prime(body, {STATE_VAR: state})
        _run(plugin.response_filter(conf, response))
        out = response.to_message()
        assert out.status == 200, out.body[:300]
        return encode_to_gateway(out)

    return call


def per_call_us(call: Callable[[], bytes], calls: int, rounds: int = 5) -> float:
    """Best of ``rounds``: a shared machine only ever makes a round slower."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - start) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--answer", choices=("2k", "sse500"), default="2k")
    parser.add_argument("--stream", action="store_true", help="the chat asks for a stream")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    asyncio.set_event_loop(None)
    body = chat_body("1k", stream=args.stream or args.answer == "sse500")
    request, state = request_phase(body)
    response = response_phase(args.answer, state)
    phases = {"request (1 KB chat)": request, f"response ({args.answer})": response}
    for name, call in phases.items():
        call()
        print(f"{name:<24} {per_call_us(call, args.calls):8.1f} us/call")
    if args.profile:
        for name, call in phases.items():
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.calls):
                call()
            profiler.disable()
            print(f"\n=== {name}: {args.calls} calls ===")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
