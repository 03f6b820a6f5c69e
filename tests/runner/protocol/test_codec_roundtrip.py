"""Our encoder and decoder agree with each other on every message, in both directions."""

from __future__ import annotations

import pytest
from codec_samples import LATIN1, TO_GATEWAY, TO_RUNNER, type_of

from apisix_openai_triton.runner.protocol import codec
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.framing import MAX_PAYLOAD, FrameTooLarge, ProtocolError


def _split(frame: bytes) -> tuple[int, bytes]:
    """Check the frame header and return (type, payload)."""
    assert int.from_bytes(frame[1:4], "big") == len(frame) - 4
    return frame[0], frame[4:]


@pytest.mark.parametrize("msg", TO_RUNNER, ids=repr)
def test_to_runner_round_trip(msg: m.ToRunner) -> None:
    msg_type, payload = _split(codec.encode_to_runner(msg))
    assert msg_type == type_of(msg)
    assert codec.decode_to_runner(msg_type, payload) == msg
    assert codec.decode_to_runner(msg_type, memoryview(payload)) == msg


@pytest.mark.parametrize("msg", TO_GATEWAY, ids=repr)
def test_to_gateway_round_trip(msg: m.ToGateway) -> None:
    msg_type, payload = _split(codec.encode_to_gateway(msg))
    assert msg_type == type_of(msg)
    assert codec.decode_to_gateway(msg_type, payload) == msg


@pytest.mark.parametrize("method", range(len(m.METHODS)))
def test_every_method(method: int) -> None:
    msg = m.HTTPReqCallRequest(id=3, conf_token=4, method=method, path="/")
    decoded = codec.decode_to_runner(2, codec.encode_to_runner(msg)[4:])
    assert isinstance(decoded, m.HTTPReqCallRequest) and decoded.method == method


def test_errors_always_travel_as_type_0() -> None:
    for code in m.ErrorCode:
        frame = codec.encode_to_gateway(m.ErrorResponse(code))
        assert frame[0] == 0
        assert codec.decode_to_gateway(0, frame[4:]) == m.ErrorResponse(code)


def test_no_action_answer_carries_the_id() -> None:
    for msg_id in (0, 1, 4194305, 2**32 - 1):
        frame = codec.encode_to_gateway(m.HTTPReqCallResponse(msg_id))
        assert codec.decode_to_gateway(2, frame[4:]) == m.HTTPReqCallResponse(msg_id)


def test_var_questions_are_cached_but_still_correct() -> None:
    first = codec.encode_to_gateway(m.ExtraInfoRequest(m.Var("request_id")))
    assert codec.encode_to_gateway(m.ExtraInfoRequest(m.Var("request_id"))) is first
    other = codec.encode_to_gateway(m.ExtraInfoRequest(m.Var("route_id")))
    assert codec.decode_to_gateway(3, other[4:]) == m.ExtraInfoRequest(m.Var("route_id"))


def test_latin1_header_passes_through_byte_for_byte() -> None:
    frame = codec.encode_to_gateway(m.HTTPRespCallResponse(1, 200, [("x-name", LATIN1)]))
    assert b"caf\xe9\x00" in frame
    decoded = codec.decode_to_gateway(4, frame[4:])
    assert isinstance(decoded, m.HTTPRespCallResponse)
    value = decoded.headers[0][1]
    assert value is not None and value.encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_unencodable_text_is_a_value_error() -> None:
    with pytest.raises(UnicodeEncodeError):
        codec.encode_to_gateway(m.HTTPReqCallResponse(1, m.Rewrite(headers=[("x", "\ud800")])))


def test_encoded_offsets_are_aligned() -> None:
    """Every table starts on 4 bytes, so a strict reader (or C++ verifier) accepts the layout."""
    frame = codec.encode_to_gateway(m.HTTPReqCallResponse(3, m.Rewrite(path="/abc", headers=[("a", "b")])))
    payload = frame[4:]
    assert len(payload) % 4 == 0
    root = int.from_bytes(payload[:4], "little")
    assert root % 4 == 0


@pytest.mark.parametrize("msg", [
    m.HTTPRespCallResponse(1, 200, [], b"x" * MAX_PAYLOAD),
    m.HTTPReqCallResponse(1, m.Rewrite(body=b"x" * (MAX_PAYLOAD - 20))),
    m.HTTPReqCallResponse(1, m.Stop(body=b"x" * (MAX_PAYLOAD - 10))),
], ids=["resp-call-body", "rewrite-body", "stop-body"])
def test_payload_over_the_limit_is_frame_too_large(msg: m.ToGateway) -> None:
    with pytest.raises(FrameTooLarge):
        codec.encode_to_gateway(msg)


def test_largest_body_that_fits_is_encoded() -> None:
    body = b"y" * (MAX_PAYLOAD - 64)
    frame = codec.encode_to_gateway(m.HTTPRespCallResponse(1, 200, [], body))
    assert len(frame) - 4 <= MAX_PAYLOAD
    decoded = codec.decode_to_gateway(4, frame[4:])
    assert isinstance(decoded, m.HTTPRespCallResponse) and decoded.body == body


@pytest.mark.parametrize("msg_type", [0, 5, 255])
def test_wrong_type_byte_for_a_runner(msg_type: int) -> None:
    payload = codec.encode_to_runner(TO_RUNNER[0])[4:]
    with pytest.raises(ProtocolError, match="never sent to a runner"):
        codec.decode_to_runner(msg_type, payload)


def test_wrong_type_byte_for_a_gateway() -> None:
    with pytest.raises(ProtocolError, match="never sent to a gateway"):
        codec.decode_to_gateway(5, codec.encode_to_gateway(m.PrepareConfResponse(1))[4:])
