"""The runner's lazy decoding of call messages gives exactly what the eager decoder gives."""

from __future__ import annotations

import struct

import pytest
from codec_samples import TO_RUNNER, recorded
from hypothesis import given, settings
from hypothesis import strategies as st

from apisix_openai_triton.runner.protocol import codec
from apisix_openai_triton.runner.protocol import flatbuf as fb
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.framing import ProtocolError

# Text as the gateway may send it: any Unicode, plus raw non-UTF-8 bytes kept by surrogateescape.
_TEXT = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
).filter(lambda t: all(not 0xD800 <= ord(c) <= 0xDC7F and not 0xDD00 <= ord(c) <= 0xDFFF for c in t))
_ENTRIES = st.lists(st.tuples(_TEXT, st.one_of(st.none(), _TEXT)), max_size=20)
_REQ = st.builds(
    m.HTTPReqCallRequest,
    id=st.integers(0, 2**32 - 1), conf_token=st.integers(0, 2**32 - 1),
    method=st.integers(0, len(m.METHODS) - 1), path=_TEXT,
    src_ip=st.sampled_from([b"", bytes(4), bytes(range(16))]), args=_ENTRIES, headers=_ENTRIES,
)
_RESP = st.builds(m.HTTPRespCallRequest, id=st.integers(0, 2**32 - 1),
                  conf_token=st.integers(0, 2**32 - 1), status=st.integers(0, 65535), headers=_ENTRIES)


def _payload(msg: m.ToRunner) -> tuple[int, bytes]:
    frame = codec.encode_to_runner(msg)
    return frame[0], frame[4:]


@settings(max_examples=300, deadline=None)
@given(st.one_of(_REQ, _RESP))
def test_lazy_equals_eager_on_random_calls(msg: m.ToRunner) -> None:
    msg_type, payload = _payload(msg)
    eager = codec.decode_to_runner(msg_type, payload)
    lazy = codec.decode_to_runner(msg_type, payload, lazy=True)
    assert type(lazy) is not type(eager)  # the lazy class really is in use
    assert lazy == eager and eager == lazy and lazy == msg
    # field by field, in an order where nothing was decoded before
    fresh = codec.decode_to_runner(msg_type, payload, lazy=True)
    assert fresh.headers == msg.headers  # type: ignore[union-attr]
    if isinstance(msg, m.HTTPReqCallRequest):
        assert isinstance(fresh, m.HTTPReqCallRequest)
        assert (fresh.args, fresh.path, fresh.src_ip, fresh.method, fresh.id, fresh.conf_token) == (
            msg.args, msg.path, msg.src_ip, msg.method, msg.id, msg.conf_token)


@pytest.mark.parametrize("msg", TO_RUNNER, ids=repr)
def test_lazy_on_the_samples(msg: m.ToRunner) -> None:
    msg_type, payload = _payload(msg)
    assert codec.decode_to_runner(msg_type, payload, lazy=True) == msg


@pytest.mark.parametrize("rec", [r for r in recorded() if r.direction == "to_runner"], ids=lambda r: r.file)
def test_recorded_gateway_frames_decode_lazily(rec: object) -> None:
    frame = rec.frame  # type: ignore[attr-defined]
    decoded = codec.decode_to_runner(frame[0], frame[4:], lazy=True)
    assert decoded == rec.expected  # type: ignore[attr-defined]
    assert repr(decoded).split("(", 1)[1] == repr(rec.expected).split("(", 1)[1]  # type: ignore[attr-defined]


def test_a_lazy_field_can_be_replaced() -> None:
    msg_type, payload = _payload(m.HTTPReqCallRequest(1, 2, path="/a", headers=[("h", "v")]))
    lazy = codec.decode_to_runner(msg_type, payload, lazy=True)
    assert isinstance(lazy, m.HTTPReqCallRequest)
    lazy.headers = [("x", "y")]
    lazy.path = "/b"
    assert lazy.headers == [("x", "y")] and lazy.path == "/b"


def _broken_first_header() -> bytes:
    payload = bytearray(_payload(m.HTTPReqCallRequest(1, 2, headers=[("h", "v")]))[1])
    buf = bytes(payload)
    headers = fb.table_at(buf, fb.fields(buf, fb.root(buf), 7, "test")[5])
    entry = fb.table_at(buf, headers + 4)
    vtable = entry - struct.unpack_from("<i", buf, entry)[0]
    struct.pack_into("<H", payload, vtable + 4, 0)  # the name is now absent
    return bytes(payload)


def test_a_malformed_entry_raises_protocol_error_on_first_access() -> None:
    payload = _broken_first_header()
    with pytest.raises(ProtocolError, match="entry without a name"):
        codec.decode_to_runner(2, payload)
    lazy = codec.decode_to_runner(2, payload, lazy=True)
    assert isinstance(lazy, m.HTTPReqCallRequest) and lazy.conf_token == 2
    with pytest.raises(ProtocolError, match="entry without a name"):
        _ = lazy.headers


def test_a_huge_length_in_a_lazy_field_is_a_protocol_error() -> None:
    payload = bytearray(_payload(m.HTTPReqCallRequest(1, 2, path="/abc"))[1])
    buf = bytes(payload)
    path_at = fb.fields(buf, fb.root(buf), 7, "test")[3]
    struct.pack_into("<I", payload, fb.table_at(buf, path_at), 2**31)
    lazy = codec.decode_to_runner(2, bytes(payload), lazy=True)
    with pytest.raises(ProtocolError, match="path"):
        _ = lazy.path  # type: ignore[union-attr]
