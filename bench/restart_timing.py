"""Time from exec to the first good answer of a restarted runner, repeated for a median.

Each round SIGKILLs the runner (the socket file stays behind, as after a crash), starts a new
process on the same path and polls a real request-phase call (``openai-to-triton`` with a
``chatml`` template, so plugin imports and conf parsing are included) until it is answered
correctly. The poll uses a fresh gateway client each time, like a gateway after a restart.

    python bench/restart_timing.py --rounds 10
    python bench/restart_timing.py --rounds 10 --no-uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time

from apisix_openai_triton.runner.testkit import GatewayClient, runner_command, wait_for_socket

CONF = [("openai-to-triton", {"model": "m", "template": "chatml"})]
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


async def first_good_answer(path: str, proc: "subprocess.Popen[bytes]", timeout: float) -> float:
    started = time.monotonic()
    while True:
        async with GatewayClient(path, connect_timeout=0.5) as gateway:
            outcome = await gateway.request(CONF, method="POST", path="/v1/chat/completions", body=BODY)
        if outcome.action == "rewrite" and outcome.upstream is not None \
                and outcome.upstream.path == "/v2/models/m/generate":
            return time.monotonic() - started
        if proc.poll() is not None or time.monotonic() - started > timeout:
            raise RuntimeError(f"no good answer: {outcome.error}")
        await asyncio.sleep(0.001)  # poll interval


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="a6-restart-"), "runner.sock")
    extra = ["--no-uvloop"] if args.no_uvloop else []
    proc = subprocess.Popen(runner_command("--listen", path, *extra), stdin=subprocess.DEVNULL)
    wait_for_socket(path, 15, proc)
    times = []
    for _ in range(args.rounds):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started = time.monotonic()
        proc = subprocess.Popen(runner_command("--listen", path, *extra), stdin=subprocess.DEVNULL)
        asyncio.run(first_good_answer(path, proc, 10))
        times.append(time.monotonic() - started)
    proc.terminate()
    proc.wait(5)
    ms = sorted(t * 1000 for t in times)
    print(json.dumps({"rounds": len(ms), "median_ms": round(statistics.median(ms)),
                      "min_ms": round(ms[0]), "max_ms": round(ms[-1]), "uvloop": not args.no_uvloop}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
