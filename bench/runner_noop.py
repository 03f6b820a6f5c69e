"""Calls per second of a running runner: C connections each doing HTTPReqCall in a loop.

Starts nothing itself. Run a runner first, for example with this file's no-op plugin:

    PYTHONPATH=bench apisix-openai-triton run --listen /tmp/r.sock --plugin runner_noop:Noop
    python bench/runner_noop.py --socket /tmp/r.sock -c 32 --conf '[["noop", ""]]'

The default conf is empty (no plugin at all): the protocol round trip alone. The client
pre-encodes its frames so that it measures the runner, not itself; on a small machine the client
and the runner share the CPUs, so read the number as a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, Optional

from apisix_openai_triton.runner import Plugin, Request, Stop
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import decode_to_gateway, encode_to_runner


class Noop(Plugin[Any]):
    """Runs on every call and changes nothing."""

    name = "noop"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return None


HEADERS: list[m.Entry] = [("host", "example.test"), ("user-agent", "bench/1"), ("accept", "*/*"),
           ("content-type", "application/json"), ("x-request-id", "0123456789abcdef")]


async def one_connection(path: str, conf: list[tuple[str, str]], deadline: float) -> int:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(encode_to_runner(m.PrepareConfRequest(conf)))
    header = await reader.readexactly(4)
    answer = decode_to_gateway(header[0], await reader.readexactly(int.from_bytes(header[1:], "big")))
    if not isinstance(answer, m.PrepareConfResponse):
        raise SystemExit(f"PrepareConf failed: {answer}")
    call = encode_to_runner(m.HTTPReqCallRequest(
        id=1, conf_token=answer.conf_token, method=0, path="/v1/chat/completions",
        src_ip=b"\x7f\x00\x00\x01", args=[("a", "1")], headers=HEADERS,
    ))
    done = 0
    clock = time.monotonic
    while clock() < deadline:
        writer.write(call)
        header = await reader.readexactly(4)
        await reader.readexactly(int.from_bytes(header[1:], "big"))
        if header[0] != m.MessageType.HTTP_REQ_CALL:
            raise SystemExit(f"unexpected answer type {header[0]}")
        done += 1
    writer.close()
    return done


async def main_async(args: argparse.Namespace) -> None:
    conf = [(name, value) for name, value in json.loads(args.conf)]
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()
    counts = await asyncio.gather(*(one_connection(args.socket, conf, deadline)
                                    for _ in range(args.connections)))
    elapsed = time.monotonic() - started
    total = sum(counts)
    print(json.dumps({"connections": args.connections, "seconds": round(elapsed, 3),
                      "calls": total, "calls_per_second": round(total / elapsed)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the runner's socket path")
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument("-s", "--seconds", type=float, default=5.0)
    parser.add_argument("--conf", default="[]", help='JSON list of [plugin, conf string] pairs')
    parser.add_argument("--uvloop", action="store_true", help="run this client on uvloop")
    args = parser.parse_args()
    loop: asyncio.AbstractEventLoop
    if args.uvloop:
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main_async(args))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
