"""Soak: a million fuzzed frames against a real runner process; counts crashes, hangs and RSS.

Not part of the test suite (it runs for minutes). It starts the runner itself, with this file's
``Touch`` plugin (reads every field, asks for the body and a variable), and drives it from many
connections at once. Each hostile connection carries one fuzzed frame, then half-closes; it must
end (answer or close) within ``--hang-after`` seconds, else it counts as a hang. One connection
in ``--check-every`` is a well-formed call whose answer is checked. If the process dies it counts
as a crash and is started again.

    python bench/soak.py --frames 1000000
    python bench/soak.py --frames 200000 --concurrency 64 --seed 7

Prints progress lines and a final JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from apisix_openai_triton.runner import Plugin, Request, Response, Stop
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import decode_to_gateway, encode_to_gateway, encode_to_runner
from apisix_openai_triton.runner.testkit import runner_command, wait_for_socket

HERE = Path(__file__).resolve().parent


class Touch(Plugin[Any]):
    """Reads every part of a call, so every lazily decoded field is decoded."""

    name = "touch"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        seen = [request.method, request.path, str(request.src_ip), str(len(list(request.args.items()))),
                str(len(list(request.headers.items()))), str(len(await request.body())),
                str(await request.var("uri"))]
        return Stop(200, [], "|".join(seen))

    async def response_filter(self, conf: Any, response: Response) -> None:
        response.set_body(f"{response.upstream_status}|{len(await response.body())}")


@dataclass
class Stats:
    frames: int = 0
    answered: int = 0
    closed_silently: int = 0
    hangs: int = 0
    crashes: int = 0
    checks: int = 0
    check_failures: int = 0
    rss_kib: list[int] = field(default_factory=list)


class Fuzzer:
    """Hostile frames of every kind the suite's tests use, drawn from a seeded generator."""

    def __init__(self, rng: random.Random, token: int) -> None:
        self.rng = rng
        self.valid = [
            encode_to_runner(m.PrepareConfRequest([("touch", "")], "route#1#ext-plugin-pre-req#1")),
            encode_to_runner(m.HTTPReqCallRequest(9, token, 2, "/v1/chat/completions", bytes([10, 0, 0, 1]),
                                                  [("a", "1"), ("f", None)], [("host", "h"), ("x", "y")])),
            encode_to_runner(m.HTTPRespCallRequest(9, token, 200, [("content-type", "text/plain")])),
            encode_to_runner(m.ExtraInfoResponse(b"value")),
        ]
        self.answers = [encode_to_runner(m.ExtraInfoResponse(b"body")), encode_to_runner(m.ExtraInfoResponse(None))]
        self.wrong_tables = [
            encode_to_gateway(m.HTTPReqCallResponse(3, m.Stop(418, [("a", "b")], b"x"))),
            encode_to_gateway(m.HTTPReqCallResponse(3, m.Rewrite(path="/p", headers=[("h", None)]))),
            encode_to_gateway(m.ExtraInfoRequest(m.Var("uri"))),
            encode_to_gateway(m.HTTPRespCallResponse(3, 200, [("a", "b")], b"x")),
        ]

    def frame(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(7)
        if kind == 0:  # random bytes
            return rng.randbytes(rng.randrange(1, 300))
        base = rng.choice(self.valid)
        if kind == 1:  # mutated bytes, the call followed by its ExtraInfo answers
            data = bytearray(base + (b"".join(self.answers) if base is self.valid[1] else b""))
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            return bytes(data)
        if kind == 2:  # wrong type byte
            return bytes([rng.choice([0, 5, 6, 0x7F, 0xFF])]) + base[1:]
        if kind == 3:  # an absurd value in an aligned word (offsets, lengths, counts)
            pos = rng.randrange(4, len(base) - 3) & ~3
            value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x00FFFFFF, len(base), rng.getrandbits(32)])
            return base[:pos] + struct.pack("<I", value) + base[pos + 4:]
        if kind == 4:  # a valid FlatBuffer of the wrong table
            table = rng.choice(self.wrong_tables)
            return bytes([rng.randrange(1, 5)]) + table[1:]
        if kind == 5:  # a length larger than the data, then EOF
            size = rng.choice([len(base), 0xFFFFFF, rng.randrange(1, 0xFFFFFF)])
            return bytes([base[0]]) + size.to_bytes(3, "big") + base[4:4 + rng.randrange(len(base) - 4)]
        return bytes(base[:rng.randrange(1, len(base))])  # cut short


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="a6-soak-")
        self.path = os.path.join(self.dir, "runner.sock")
        self.log = open(os.path.join(self.dir, "runner.log"), "wb")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.stats = Stats()
        self.token = 0

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        command = runner_command("--listen", self.path, "--plugin", "soak:Touch",
                                 "--read-timeout", str(self.args.read_timeout))
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        wait_for_socket(self.path, 15, self.proc)

    async def prepare(self) -> int:
        reader, writer = await asyncio.open_unix_connection(self.path)
        writer.write(encode_to_runner(m.PrepareConfRequest([("touch", "")])))
        header = await reader.readexactly(4)
        answer = decode_to_gateway(header[0], await reader.readexactly(int.from_bytes(header[1:], "big")))
        writer.close()
        assert isinstance(answer, m.PrepareConfResponse)
        return answer.conf_token

    async def hostile(self, data: bytes) -> None:
        stats = self.stats
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 5)
        except (OSError, asyncio.TimeoutError):
            await self.crashed()
            return
        stats.frames += 1
        try:
            writer.write(data)
            if writer.can_write_eof():
                writer.write_eof()
            received = await asyncio.wait_for(reader.read(), self.args.hang_after)
            if received:
                stats.answered += 1
            else:
                stats.closed_silently += 1
        except asyncio.TimeoutError:
            stats.hangs += 1
        except OSError:
            stats.closed_silently += 1
        finally:
            writer.close()

    async def check(self, n: int) -> None:
        stats = self.stats
        stats.checks += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 5)
            call = encode_to_runner(m.HTTPReqCallRequest(n, self.token, 0, f"/check/{n}", bytes([127, 0, 0, 1])))
            writer.write(call + encode_to_runner(m.ExtraInfoResponse(b"abc"))
                         + encode_to_runner(m.ExtraInfoResponse(b"/u")))
            frames = []
            for _ in range(3):
                header = await asyncio.wait_for(reader.readexactly(4), self.args.hang_after)
                frames.append(decode_to_gateway(header[0], await reader.readexactly(int.from_bytes(header[1:], "big"))))
            writer.close()
            final = frames[-1]
            ok = (isinstance(final, m.HTTPReqCallResponse) and final.id == n and isinstance(final.action, m.Stop)
                  and final.action.body == f"GET|/check/{n}|127.0.0.1|0|0|3|/u".encode())
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            ok = False
        if not ok:
            stats.check_failures += 1
            await self.crashed()

    async def crashed(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is not None:
            self.stats.crashes += 1
            print(f"runner exited with {proc.returncode}: restarting", file=sys.stderr)
            self.start()
            self.token = await self.prepare()

    async def run(self) -> Stats:
        args = self.args
        self.start()
        assert self.proc is not None
        self.token = await self.prepare()
        fuzzer = Fuzzer(random.Random(args.seed), self.token)
        sem = asyncio.Semaphore(args.concurrency)
        pending: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        report_every = max(1, args.frames // 10)

        async def one(i: int, data: bytes) -> None:
            try:
                if i % args.check_every == 0:
                    await self.check(i)
                else:
                    await self.hostile(data)
            finally:
                sem.release()

        for i in range(args.frames):
            if i == min(10_000, args.frames // 10):
                self.stats.rss_kib.append(rss_kib(self.proc.pid))  # after warm-up
            await sem.acquire()  # at most `concurrency` connections open; released by `one`
            task = asyncio.ensure_future(one(i, b"" if i % args.check_every == 0 else fuzzer.frame()))
            pending.add(task)
            task.add_done_callback(pending.discard)
            if i and i % report_every == 0:
                rate = i / (time.monotonic() - started)
                print(f"{i} frames, {rate:.0f}/s, RSS {rss_kib(self.proc.pid)} KiB, "
                      f"hangs {self.stats.hangs}, crashes {self.stats.crashes}", file=sys.stderr)
        await asyncio.gather(*pending)
        self.stats.rss_kib.append(rss_kib(self.proc.pid))
        self.elapsed = time.monotonic() - started
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        return self.stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--hang-after", type=float, default=10.0,
                        help="seconds without an answer or a close that count as a hang")
    parser.add_argument("--read-timeout", type=float, default=2.0,
                        help="the runner's --read-timeout")
    args = parser.parse_args()
    soak = Soak(args)
    stats = asyncio.run(soak.run())
    log_text = open(os.path.join(soak.dir, "runner.log"), "rb").read().decode("utf-8", "replace")
    summary = dict(asdict(stats), seconds=round(soak.elapsed, 1),
                   frames_per_second=round(stats.frames / soak.elapsed),
                   rss_growth_kib=stats.rss_kib[-1] - stats.rss_kib[0] if len(stats.rss_kib) > 1 else None,
                   log_lines=log_text.count("\n"), tracebacks=log_text.count("Traceback"),
                   error_lines=sum(1 for line in log_text.splitlines() if " ERROR " in line),
                   runner_log=os.path.join(soak.dir, "runner.log"))
    print(json.dumps(summary, indent=2))
    return 0 if not (stats.hangs or stats.crashes or stats.check_failures) else 1


if __name__ == "__main__":
    sys.exit(main())
