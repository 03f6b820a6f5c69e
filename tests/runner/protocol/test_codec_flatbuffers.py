"""Our codec against an independent one on the ``flatbuffers`` runtime (codec_fbref.py).

Gateway -> runner messages are built with ``flatbuffers.Builder`` and decoded by ours; ours
encode runner -> gateway messages and ``flatbuffers.table.Table`` reads every field back. The
other two directions are checked as well, since the gateway-side test kit uses them.
"""

from __future__ import annotations

import codec_fbref as ref
import pytest
from codec_samples import TO_GATEWAY, TO_RUNNER, type_of

from apisix_openai_triton.runner.protocol import codec
from apisix_openai_triton.runner.protocol import messages as m


@pytest.mark.parametrize("msg", TO_RUNNER, ids=repr)
def test_we_decode_what_flatbuffers_builds_for_the_runner(msg: m.ToRunner) -> None:
    assert codec.decode_to_runner(type_of(msg), ref.build_to_runner(msg)) == msg


@pytest.mark.parametrize("msg", TO_GATEWAY, ids=repr)
def test_flatbuffers_reads_every_field_we_send_the_gateway(msg: m.ToGateway) -> None:
    frame = codec.encode_to_gateway(msg)
    assert ref.read_to_gateway(frame[0], frame[4:]) == msg


@pytest.mark.parametrize("msg", TO_RUNNER, ids=repr)
def test_flatbuffers_reads_what_our_test_kit_sends(msg: m.ToRunner) -> None:
    frame = codec.encode_to_runner(msg)
    assert ref.read_to_runner(frame[0], frame[4:]) == msg


@pytest.mark.parametrize("msg", TO_GATEWAY, ids=repr)
def test_we_decode_what_flatbuffers_builds_for_the_gateway(msg: m.ToGateway) -> None:
    assert codec.decode_to_gateway(type_of(msg), ref.build_to_gateway(msg)) == msg


def test_a_value_less_entry_has_no_value_field() -> None:
    """``None`` must be an absent field (the gateway deletes the header), not an empty string."""
    frame = codec.encode_to_gateway(m.HTTPReqCallResponse(1, m.Rewrite(headers=[("x-drop", None)])))
    decoded = ref.read_to_gateway(2, frame[4:])
    assert isinstance(decoded, m.HTTPReqCallResponse) and isinstance(decoded.action, m.Rewrite)
    assert decoded.action.headers == [("x-drop", None)]
