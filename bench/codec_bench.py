"""Hot-path codec throughput: our hand-written codec against the ``flatbuffers`` runtime.

The runtime side is the reference codec the tests use (tests/runner/protocol/codec_fbref.py:
``flatbuffers.Builder`` calls, and readers on ``flatbuffers.table.Table`` written the way
generated code reads). Both sides produce or consume the same messages; encoding includes the
4-byte frame header on both sides.

    python bench/codec_bench.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from apisix_openai_triton.runner.protocol import codec
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.framing import encode_frame

_REF = Path(__file__).resolve().parents[1] / "tests" / "runner" / "protocol" / "codec_fbref.py"


def _load_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("codec_fbref", _REF)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["codec_fbref"] = module
    spec.loader.exec_module(module)
    return module


def _request() -> m.HTTPReqCallRequest:
    headers: list[m.Entry] = [
        ("host", "llm.example.com"), ("user-agent", "OpenAI/Python 1.51.0"),
        ("content-type", "application/json"), ("content-length", "412"),
        ("authorization", "Bearer sk-0123456789abcdef0123456789abcdef"), ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"), ("x-stainless-lang", "python"),
        ("x-request-id", "5f0c6a1e-8d2b-4a57-9b0e-2f3c4d5e6f70"), ("x-forwarded-for", "10.1.2.3"),
    ]
    args: list[m.Entry] = [("trace", "1"), ("flag", None), ("api-version", "2024-06-01")]
    return m.HTTPReqCallRequest(
        id=4194305, conf_token=7, method=2, path="/v1/chat/completions",
        src_ip=bytes([10, 1, 2, 3]), args=args, headers=headers,
    )


def _rewrite() -> m.HTTPReqCallResponse:
    body = (b'{"text_input":"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nWhat is the '
            b'capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n",'
            b'"max_tokens":64,"temperature":0.2,"exclude_input_in_output":true,"return_finish_reason":true}')
    return m.HTTPReqCallResponse(4194305, m.Rewrite(
        path="/v2/models/llama3/generate",
        headers=[("content-type", "application/json"), ("authorization", None),
                 ("x-a6-state", "v1.eyJtIjoibGxhbWEzIn0.c2lnbmF0dXJl")],
        body=body,
    ))


def _resp_call() -> m.HTTPRespCallResponse:
    return m.HTTPRespCallResponse(
        4194306, 200, [("content-type", "application/json"), ("x-request-id", "5f0c6a1e")], b"x" * 2048,
    )


def _rates(fns: list[Callable[[], object]], seconds: float, rounds: int = 15) -> list[float]:
    """Calls per second of each function, best of ``rounds`` interleaved runs.

    Interleaving keeps the ratio fair when the machine's load changes during the run.
    """
    timers = [timeit.Timer(fn) for fn in fns]
    numbers = []
    for timer in timers:
        number, elapsed = timer.autorange()
        numbers.append(max(1, int(number * seconds / rounds / elapsed)))
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, timer in enumerate(timers):
            best[i] = min(best[i], timer.timeit(numbers[i]) / numbers[i])
    return [1 / b for b in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per figure")
    opts = parser.parse_args()
    ref = _load_reference()

    request = _request()
    payload = codec.encode_to_runner(request)[4:]
    assert codec.decode_to_runner(2, payload) == request == ref.read_http_req_call_req(payload)
    rewrite, resp_call = _rewrite(), _resp_call()
    for msg, msg_type in ((rewrite, 2), (resp_call, 4)):
        ours = codec.encode_to_gateway(msg)
        assert ref.read_to_gateway(msg_type, ours[4:]) == msg
        assert codec.decode_to_gateway(msg_type, encode_frame(msg_type, ref.build_to_gateway(msg))[4:]) == msg

    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("decode HTTPReqCall.Req (10 headers, 3 args)",
         lambda: codec.decode_to_runner(2, payload), lambda: ref.read_http_req_call_req(payload)),
        ("encode HTTPReqCall.Resp Rewrite (3 headers, 300 B body)",
         lambda: codec.encode_to_gateway(rewrite), lambda: encode_frame(2, ref.build_to_gateway(rewrite))),
        ("encode HTTPRespCall.Resp (2 headers, 2 KB body)",
         lambda: codec.encode_to_gateway(resp_call), lambda: encode_frame(4, ref.build_to_gateway(resp_call))),
    ]
    print(f"{'operation':58} {'ours ops/s':>12} {'flatbuffers':>12} {'ratio':>7}")
    for name, ours_fn, ref_fn in cases:
        ours_rate, ref_rate = _rates([ours_fn, ref_fn], opts.seconds)
        print(f"{name:58} {ours_rate:12,.0f} {ref_rate:12,.0f} {ours_rate / ref_rate:6.1f}x")

    no_action = m.HTTPReqCallResponse(4194305)
    var = m.ExtraInfoRequest(m.Var("request_id"))
    body = m.ExtraInfoRequest(m.ReqBody())
    for name, fn in (("encode HTTPReqCall.Resp no action", lambda: codec.encode_to_gateway(no_action)),
                     ("encode ExtraInfo.Req Var", lambda: codec.encode_to_gateway(var)),
                     ("encode ExtraInfo.Req ReqBody", lambda: codec.encode_to_gateway(body))):
        print(f"{name:58} {_rates([fn], opts.seconds)[0]:12,.0f}")


if __name__ == "__main__":
    main()
