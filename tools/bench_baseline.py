"""The baseline of ``bench``: the fastest answer a Python asyncio server can give.

It reads frames and writes back a frame encoded once at start-up (a conf token for PrepareConf,
"no action" for HTTPReqCall): no decoding, no conf store, no plugin. The runner's ``noop``
figures are reported as a ratio to this server measured in the same run, on the same machine
and event loop, so the ratio says how much of the possible speed the runner keeps.

Run as ``python -m apisix_openai_triton.tools.bench_baseline --listen PATH [--procs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Optional, cast

from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import encode_to_gateway

BASELINE_TOKEN = 1
"""The conf token the baseline hands out (it has no conf store: every token is this one)."""


class _Answerer(asyncio.Protocol):
    """Answers each whole frame with the precomputed frame for its type; closes on anything else."""

    __slots__ = ("_answers", "_buf", "_transport")

    def __init__(self, answers: dict[int, bytes]) -> None:
        self._answers = answers
        self._buf = b""
        self._transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        have = len(buf)
        out = []
        while have - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos + 1:pos + 4], "big")
            if end > have:
                break
            answer = self._answers.get(buf[pos])
            if answer is None:
                assert self._transport is not None
                self._transport.close()
                return
            out.append(answer)
            pos = end
        self._buf = buf[pos:]
        if out:
            assert self._transport is not None
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))


def precomputed_answers(call_id: int) -> dict[int, bytes]:
    """The frame sent back for each request type."""
    return {
        m.MessageType.PREPARE_CONF: encode_to_gateway(m.PrepareConfResponse(BASELINE_TOKEN)),
        m.MessageType.HTTP_REQ_CALL: encode_to_gateway(m.HTTPReqCallResponse(call_id, None)),
    }


async def _serve(sock: socket.socket, answers: dict[int, bytes]) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await loop.create_unix_server(lambda: _Answerer(answers), sock=sock, backlog=1024)
    async with server:
        await stop


def _run_loop(sock: socket.socket, answers: dict[int, bytes], use_uvloop: bool) -> None:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            use_uvloop = False
        else:
            uvloop.run(_serve(sock, answers))
            return
    asyncio.run(_serve(sock, answers))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, help="Unix socket path to create")
    parser.add_argument("--procs", type=int, default=1,
                        help="processes accepting on the socket (like runner workers)")
    parser.add_argument("--call-id", type=int, default=0, help="id echoed in the answer")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = parser.parse_args(argv)
    path = args.listen.removeprefix("unix:")
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1024)
    answers = precomputed_answers(args.call_id)
    children: list[int] = []
    try:
        for _ in range(max(args.procs, 1) - 1):
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _run_loop(sock, answers, not args.no_uvloop)
                os._exit(0)
            children.append(pid)
        _run_loop(sock, answers, not args.no_uvloop)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except ProcessLookupError:
                pass
        if os.path.exists(path):
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
