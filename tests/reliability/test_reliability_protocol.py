"""Protocol robustness against a live runner: random and mutated bytes never crash or hang it.

A runner in its own thread serves a steady, well-behaved client that checks every answer while
each test throws hostile frames at it on other connections. Every hostile connection must end
(an answer, or the runner closing it) within a bounded time, each incident is at most one log
line, nothing is logged as an internal error, and the steady client never sees a wrong answer.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_kit import (
    RecordCollector, SteadyClient, Tag, ThreadRunner, Touch, exchange, split_frames,
    subprocess_env, tag_conf, valid_to_runner_frames, wrong_table_frames,
)

from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import decode_to_gateway, encode_to_runner
from apisix_openai_triton.runner.protocol.framing import ProtocolError
from apisix_openai_triton.runner.testkit import GatewayClient, RunnerProcess, raw_connection

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


class Live:
    def __init__(self, runner: ThreadRunner, collector: RecordCollector, token: int) -> None:
        self.runner = runner
        self.collector = collector
        self.token = token
        self.cases = 0

    @property
    def path(self) -> str:
        return self.runner.socket_path

    def hit(self, data: bytes) -> list[tuple[int, bytes]]:
        """One hostile connection: at most one new log line, whole frames only in the answer."""
        before = len(self.collector.records)
        answer = exchange(self.path, data)
        self.cases += 1
        new = self.collector.records[before:]
        assert len(new) <= 1, [r.getMessage() for r in new]
        return split_frames(answer)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with RecordCollector() as collector:
        runner = ThreadRunner([Tag, Touch]).start()

        async def prepare() -> int:
            async with GatewayClient(runner.socket_path) as gateway:
                return await gateway.prepare([("touch", "")])

        state = Live(runner, collector, runner.call(prepare()))
        yield state
        steady_calls = runner.stop()
    assert steady_calls > 0  # every one of them answered correctly (checked by SteadyClient)
    lines = collector.lines()
    assert all("\n" not in line for line in lines)
    assert not collector.lines(logging.ERROR), collector.lines(logging.ERROR)[:3]
    assert not [line for line in lines if "Traceback" in line]
    print(f"\nprotocol fuzz: {state.cases} hostile connections, {steady_calls} steady calls "
          f"answered correctly beside them, {len(lines)} log lines")


def _frames_of(live: Live) -> dict[str, bytes]:
    frames = valid_to_runner_frames(live.token)
    # A call followed by the answer to its body question: the ExtraInfo is read in context.
    call = frames["http_req_call"]
    frames["call+extra_info"] = call + frames["extra_info"] * 2
    return frames


def test_valid_frames_are_answered(live: Live) -> None:
    frames = _frames_of(live)
    answer = live.hit(frames["call+extra_info"])
    types = [t for t, _ in answer]
    assert types == [3, 3, 2]  # body question, var question, the Stop
    final = decode_to_gateway(*answer[-1])
    assert isinstance(final, m.HTTPReqCallResponse) and isinstance(final.action, m.Stop)
    assert final.action.body == b"POST|/v1/chat/completions|10.0.0.1|2|2|11|value bytes"


def test_every_u32_slot_set_to_absurd_values(live: Live) -> None:
    """Each aligned word of each valid message (offsets, vector and string lengths, vtable
    offsets, ids, tokens) replaced by values that point far outside the payload."""
    cases = 0
    for name, frame in _frames_of(live).items():
        for pos in range(4, len(frame) - 3, 4):
            for value in (0xFFFFFFFF, 0x7FFFFFFF, 0x00FFFFFF, len(frame)):
                live.hit(frame[:pos] + struct.pack("<I", value) + frame[pos + 4:])
                cases += 1
    assert cases > 300


@pytest.mark.parametrize("msg_type", [0, 5, 6, 7, 0x7F, 0x80, 0xFF])
def test_wrong_type_bytes_close_with_one_line(live: Live, msg_type: int) -> None:
    for name, frame in valid_to_runner_frames(live.token).items():
        before = len(live.collector.records)
        assert live.hit(bytes([msg_type]) + frame[1:]) == []
        new = [r.getMessage() for r in live.collector.records[before:]]
        assert len(new) == 1 and "protocol violation" in new[0], (name, new)


def test_valid_flatbuffers_of_the_wrong_table(live: Live) -> None:
    """Runner -> gateway tables (with unions) sent to the runner: refused or answered, never a
    crash; a PrepareConf that does not parse as one is refused with one line."""
    for name, frame in wrong_table_frames().items():
        answer = live.hit(frame)
        for msg_type, payload in answer:
            decode_to_gateway(msg_type, payload)  # whatever came back is a well-formed answer


def test_absurd_vector_lengths_in_entries(live: Live) -> None:
    """A header vector that claims 2**32-1 entries, and an entry whose value claims 2**31 bytes."""
    call = encode_to_runner(m.HTTPReqCallRequest(1, live.token, 0, "/", b"", [],
                                                 [("h", "v")]))
    payload = bytearray(call[4:])
    # The vector count is the word right before the single entry offset: find it by value 1.
    counts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == b"\x01\x00\x00\x00"]
    assert counts
    for at in counts:
        mutated = bytearray(payload)
        mutated[at:at + 4] = b"\xff\xff\xff\xff"
        live.hit(call[:4] + bytes(mutated))
    value_len = payload.rfind(b"\x01\x00\x00\x00v")
    assert value_len > 0
    payload[value_len:value_len + 4] = struct.pack("<I", 1 << 31)
    before = len(live.collector.records)
    assert live.hit(call[:4] + bytes(payload)) == []
    assert "protocol violation" in live.collector.records[before].getMessage()


@FUZZ
@given(st.binary(min_size=1, max_size=400))
def test_random_bytes(live: Live, data: bytes) -> None:
    live.hit(data)


@FUZZ
@given(st.integers(0, 255), st.integers(0, 0xFFFFFF), st.binary(max_size=300))
def test_random_headers_with_any_length(live: Live, msg_type: int, size: int, body: bytes) -> None:
    live.hit(bytes([msg_type]) + size.to_bytes(3, "big") + body)


@FUZZ
@given(st.data())
def test_valid_frames_with_mutated_bytes(live: Live, data: st.DataObject) -> None:
    frames = _frames_of(live)
    name = data.draw(st.sampled_from(sorted(frames)))
    frame = bytearray(frames[name])
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        frame = frame[:data.draw(st.integers(1, len(frame)))]  # and maybe cut short
    live.hit(bytes(frame))


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(st.sampled_from([1, 2, 3, 4]), st.binary(min_size=1, max_size=200))
def test_decoder_raises_nothing_but_protocol_error(msg_type: int, payload: bytes) -> None:
    """The codec on its own, fast: random payloads decode or raise ProtocolError, including
    fields decoded on first access."""
    from apisix_openai_triton.runner.protocol.codec import decode_to_runner
    try:
        msg = decode_to_runner(msg_type, payload)
        for attr in ("path", "src_ip", "args", "headers", "conf", "key", "result"):
            getattr(msg, attr, None)
    except ProtocolError:
        pass


async def test_lengths_larger_than_the_data_then_silence() -> None:
    """Peers that announce more than they send and go quiet are closed after the read timeout,
    one line each, while a steady client keeps getting correct answers; nothing is allocated
    for the announced lengths (16 MiB announced 40 times)."""
    from apisix_openai_triton.runner.testkit import run_runner
    peers = 40
    with RecordCollector() as collector:
        async with run_runner(plugins=[Tag], read_timeout=0.3) as runner:
            steady = SteadyClient(runner.socket_path).start()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                raws = [await raw_connection(runner.socket_path, timeout=5.0) for _ in range(peers)]
                started = time.monotonic()
                for i, raw in enumerate(raws):
                    size = 0xFFFFFF if i % 2 else 5000
                    await raw.send_bytes(bytes([2]) + size.to_bytes(3, "big") + b"\0" * 1000)
                closed = await asyncio.gather(*(raw.closed_by_peer() for raw in raws))
                elapsed = time.monotonic() - started
                grown = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            for raw in raws:
                await raw.close()
            calls = await steady.stop()
    assert all(closed) and 0.25 < elapsed < 3.0
    assert grown < 4 * 1024 * 1024, f"{grown} bytes traced for {peers} announced frames"
    assert calls > 0
    timeouts = [line for line in collector.lines(logging.WARNING) if "no data from the gateway" in line]
    assert len(timeouts) == peers


def test_subprocess_runner_survives_junk_and_logs_one_line_each(tmp_path: object) -> None:
    """The real process: every kind of junk once on its own connection; stderr has exactly one
    warning line per incident, the process is alive, and calls are still answered correctly."""
    import os
    path = os.path.join(str(tmp_path), "r.sock")
    junk = [bytes([t]) + frame[1:] for t in (0, 9, 0xFF) for frame in valid_to_runner_frames().values()]
    junk += [b"\x02\x00\x00\x00",
             b"\x02\x00\x00\x08\xff\xff\xff\x7f\x00\x00\x00\x00"]
    with RunnerProcess(path, "--plugin", "reliability_kit:Tag", "--read-timeout", "0.3",
                       "--no-uvloop", env=subprocess_env()) as proc:
        for data in junk:
            assert exchange(path, data) == b""

        async def still_serves() -> None:
            async with GatewayClient(path) as gateway:
                for i in range(20):
                    outcome = await gateway.request(tag_conf("after"), path=f"/{i}")
                    assert outcome.response is not None and outcome.response.body == f"after|/{i}".encode()

        asyncio.run(still_serves())
        assert proc.proc is not None and proc.proc.poll() is None
        output = proc.output()
    violations = [line for line in output.splitlines() if "protocol violation" in line]
    assert len(violations) == len(junk), output
    assert "Traceback" not in output and " ERROR " not in output
