"""Hostile input: whatever arrives, decoding raises ``ProtocolError`` or returns a message.

Never ``IndexError``, ``struct.error``, ``UnicodeDecodeError``, ``MemoryError`` or a hang.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
from collections.abc import Callable

import codec_fbref as ref
import pytest
from codec_samples import TO_GATEWAY, TO_RUNNER, recorded, type_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apisix_openai_triton.runner.protocol import codec
from apisix_openai_triton.runner.protocol import flatbuf as fb
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.framing import ProtocolError

VALID_TO_RUNNER = [(type_of(msg), codec.encode_to_runner(msg)[4:]) for msg in TO_RUNNER] + [
    (r.msg_type, r.frame[4:]) for r in recorded() if r.direction == "to_runner"
]
VALID_TO_GATEWAY = [(type_of(msg), codec.encode_to_gateway(msg)[4:]) for msg in TO_GATEWAY] + [
    (r.msg_type, r.frame[4:]) for r in recorded() if r.direction == "to_gateway"
]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _survives(decode: Callable[[int, bytes], object], msg_type: int, payload: bytes) -> None:
    try:
        decode(msg_type, payload)
    except ProtocolError:
        pass


@FUZZ
@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=600))
def test_random_bytes_to_runner(msg_type: int, payload: bytes) -> None:
    _survives(codec.decode_to_runner, msg_type, payload)


@FUZZ
@given(st.sampled_from([0, 1, 2, 3, 4]), st.binary(max_size=600))
def test_random_bytes_to_gateway(msg_type: int, payload: bytes) -> None:
    _survives(codec.decode_to_gateway, msg_type, payload)


_INTERESTING = st.sampled_from([0, 1, 3, 4, 0x7F, 0x80, 0xFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1])


@st.composite
def _mutated(draw: st.DrawFn, valid: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    msg_type, payload = draw(st.sampled_from(valid))
    data = bytearray(payload)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "word"]))
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(min_value=1, max_value=8))]
        elif op == "truncate":
            del data[at:]
        elif op == "word" and len(data) >= at + 4:
            struct.pack_into("<I", data, at, draw(_INTERESTING))
    return msg_type, bytes(data)


@FUZZ
@given(_mutated(VALID_TO_RUNNER))
def test_mutated_payloads_to_runner(case: tuple[int, bytes]) -> None:
    _survives(codec.decode_to_runner, *case)


@FUZZ
@given(_mutated(VALID_TO_GATEWAY))
def test_mutated_payloads_to_gateway(case: tuple[int, bytes]) -> None:
    _survives(codec.decode_to_gateway, *case)


def _with_length(payload: bytes, field: int, value: int) -> bytes:
    """``payload`` (an HTTPReqCall.Req) with the length word of vector/string ``field`` set."""
    fields = fb.fields(payload, fb.root(payload), 7, "test")
    vec = fb.table_at(payload, fields[field])
    data = bytearray(payload)
    struct.pack_into("<I", data, vec, value)
    return bytes(data)


REQ = codec.encode_to_runner(m.HTTPReqCallRequest(
    id=1, conf_token=2, method=2, path="/p", src_ip=b"\x7f\x00\x00\x01",
    args=[("a", "1")], headers=[("h", "v"), ("k", None)],
))[4:]


@pytest.mark.parametrize("field, what", [(5, "headers"), (4, "args"), (1, "src_ip"), (3, "path")])
@pytest.mark.parametrize("length", [2**31, 2**32 - 1, 2**24])
def test_huge_length_word_neither_allocates_nor_loops(field: int, what: str, length: int) -> None:
    payload = _with_length(REQ, field, length)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ProtocolError, match=what if field in (4, 5) else "run past"):
            codec.decode_to_runner(2, payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    assert peak < 256 * 1024


def test_result_length_past_the_buffer() -> None:
    payload = bytearray(codec.encode_to_runner(m.ExtraInfoResponse(b"abc"))[4:])
    (result_at,) = fb.fields(bytes(payload), fb.root(bytes(payload)), 1, "test")
    struct.pack_into("<I", payload, fb.table_at(bytes(payload), result_at), 2**31)
    with pytest.raises(ProtocolError, match="ExtraInfo.Resp.result"):
        codec.decode_to_runner(3, bytes(payload))


def test_vtable_before_the_payload() -> None:
    payload = bytearray(REQ)
    struct.pack_into("<i", payload, fb.root(REQ), 2**31 - 1)
    with pytest.raises(ProtocolError, match="vtable"):
        codec.decode_to_runner(2, bytes(payload))


def test_root_offset_past_the_end() -> None:
    with pytest.raises(ProtocolError, match="HTTPReqCall.Req: offset out of range"):
        codec.decode_to_runner(2, struct.pack("<I", 1000) + bytes(8))


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x04\x00\x00"])
def test_short_payloads(payload: bytes) -> None:
    for msg_type in (1, 2, 3, 4):
        with pytest.raises(ProtocolError):
            codec.decode_to_runner(msg_type, payload)


def test_bad_utf8_in_configuration_is_a_protocol_error() -> None:
    frame = codec.encode_to_runner(m.PrepareConfRequest([("plugin", "{}")]))
    bad = frame[4:].replace(b"plugin", b"plug\xffn")
    with pytest.raises(ProtocolError, match=r"PrepareConf.Req.conf\[0\]: invalid UTF-8"):
        codec.decode_to_runner(1, bad)


def test_bad_utf8_in_http_data_is_kept_not_refused() -> None:
    frame = codec.encode_to_runner(m.HTTPReqCallRequest(1, 2, path="/caf-", headers=[("x", "caf-")]))
    msg = codec.decode_to_runner(2, frame[4:].replace(b"caf-", b"caf\xe9"))
    assert isinstance(msg, m.HTTPReqCallRequest)
    assert msg.path.encode("utf-8", "surrogateescape") == b"/caf\xe9"
    assert msg.headers[0][1] is not None and msg.headers[0][1].encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_unknown_enum_values_are_protocol_errors() -> None:
    req = bytearray(codec.encode_to_runner(m.HTTPReqCallRequest(1, 2, method=2))[4:])
    method_at = fb.fields(bytes(req), fb.root(bytes(req)), 7, "test")[2]
    req[method_at] = 15
    with pytest.raises(ProtocolError, match="unknown method 15"):
        codec.decode_to_runner(2, bytes(req))
    err = bytearray(codec.encode_to_gateway(m.ErrorResponse(m.ErrorCode.BAD_REQUEST))[4:])
    err[fb.fields(bytes(err), fb.root(bytes(err)), 1, "test")[0]] = 3
    with pytest.raises(ProtocolError, match="unknown code 3"):
        codec.decode_to_gateway(0, bytes(err))


def test_prepare_conf_entry_without_value() -> None:
    conf: list[m.Entry] = [("p", None)]  # what a broken peer could send
    payload = ref.build_to_runner(m.PrepareConfRequest(conf))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"conf\[0\] \('p'\) has no value"):
        codec.decode_to_runner(1, payload)


def test_text_entry_without_name() -> None:
    payload = bytearray(REQ)
    headers = fb.table_at(REQ, fb.fields(REQ, fb.root(REQ), 7, "test")[5])
    first_entry = fb.table_at(REQ, headers + 4)
    vtable = first_entry - struct.unpack_from("<i", REQ, first_entry)[0]
    struct.pack_into("<H", payload, vtable + 4, 0)  # field 0 (name) absent
    with pytest.raises(ProtocolError, match=r"headers\[0\]: entry without a name"):
        codec.decode_to_runner(2, bytes(payload))
