"""Frames recorded from a real APISIX 3.18 (../shared/frames) decode to the manifest's fields."""

from __future__ import annotations

import pytest
from codec_samples import FRAMES_DIR, Recorded, recorded

from apisix_openai_triton.runner.protocol import codec
from apisix_openai_triton.runner.protocol.framing import FrameDecoder

FRAMES = recorded()
pytestmark = pytest.mark.skipif(not FRAMES, reason=f"no recorded frames at {FRAMES_DIR} (CI has them beside the clone)")


def _frame(rec: Recorded) -> tuple[int, bytes]:
    decoder = FrameDecoder()
    decoder.feed(rec.frame)
    got = decoder.next_frame()
    assert got is not None and decoder.pending() == 0
    msg_type, payload = got
    assert msg_type == rec.msg_type
    return msg_type, payload


def _ids(rec: Recorded) -> str:
    return rec.file


@pytest.mark.parametrize("rec", [r for r in FRAMES if r.direction == "to_runner"], ids=_ids)
def test_gateway_frame_decodes_to_manifest(rec: Recorded) -> None:
    msg_type, payload = _frame(rec)
    assert codec.decode_to_runner(msg_type, payload) == rec.expected


@pytest.mark.parametrize("rec", [r for r in FRAMES if r.direction == "to_gateway"], ids=_ids)
def test_runner_frame_decodes_to_manifest(rec: Recorded) -> None:
    msg_type, payload = _frame(rec)
    assert codec.decode_to_gateway(msg_type, payload) == rec.expected


@pytest.mark.parametrize("rec", [r for r in FRAMES if r.direction == "to_runner"], ids=_ids)
def test_gateway_message_survives_re_encoding(rec: Recorded) -> None:
    msg = codec.decode_to_runner(rec.msg_type, rec.frame[4:])
    frame = codec.encode_to_runner(msg)
    assert frame[0] == rec.msg_type
    assert codec.decode_to_runner(frame[0], frame[4:]) == msg


@pytest.mark.parametrize("rec", [r for r in FRAMES if r.direction == "to_gateway"], ids=_ids)
def test_runner_message_survives_re_encoding(rec: Recorded) -> None:
    msg = codec.decode_to_gateway(rec.msg_type, rec.frame[4:])
    frame = codec.encode_to_gateway(msg)
    assert frame[0] == rec.msg_type
    assert codec.decode_to_gateway(frame[0], frame[4:]) == msg


def test_all_recorded_frames_in_one_stream() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"".join(r.frame for r in FRAMES))
    got = []
    while (frame := decoder.next_frame()) is not None:
        got.append(frame)
    assert got == [(r.msg_type, r.frame[4:]) for r in FRAMES]
