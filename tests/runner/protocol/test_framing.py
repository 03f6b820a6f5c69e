"""The A6 frame header, and the incremental decoder the server runs on every read."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apisix_openai_triton.runner.protocol.framing import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    encode_frame,
)

FRAMES = [(1, b"a"), (2, b"bc" * 100), (0, b"\x00" * 7), (4, bytes(range(256)) * 300), (3, b"z")]
STREAM = b"".join(encode_frame(t, p) for t, p in FRAMES)


def _drain(decoder: FrameDecoder) -> list[tuple[int, bytes]]:
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


def test_header_is_type_then_24_bit_big_endian_length() -> None:
    assert encode_frame(2, b"xyz") == b"\x02\x00\x00\x03xyz"
    assert encode_frame(4, b"\x00" * 0x010203)[:4] == b"\x04\x01\x02\x03"
    assert HEADER_SIZE == 4 and MAX_PAYLOAD == 16_777_215


def test_largest_payload_fits_and_one_more_byte_does_not() -> None:
    assert encode_frame(1, b"x" * MAX_PAYLOAD)[:4] == b"\x01\xff\xff\xff"
    with pytest.raises(FrameTooLarge, match="over"):
        encode_frame(1, b"x" * (MAX_PAYLOAD + 1))
    assert issubclass(FrameTooLarge, ProtocolError)


def test_several_frames_in_one_feed() -> None:
    decoder = FrameDecoder()
    decoder.feed(STREAM)
    assert _drain(decoder) == FRAMES
    assert decoder.pending() == 0


def test_one_byte_at_a_time_yields_the_same_frames() -> None:
    decoder = FrameDecoder()
    got = []
    for i in range(len(STREAM)):
        decoder.feed(STREAM[i:i + 1])
        got += _drain(decoder)
    assert got == FRAMES
    assert decoder.pending() == 0


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_yields_the_same_frames(cuts: list[int]) -> None:
    decoder = FrameDecoder()
    got = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for start, end in zip(bounds, bounds[1:]):
        decoder.feed(STREAM[start:end])
        got += _drain(decoder)
    assert got == FRAMES


def test_frames_after_compaction_are_intact() -> None:
    """Past 64 KiB of consumed bytes the buffer drops its prefix; frames must not shift."""
    big = [(2, bytes([i]) * 40_000) for i in range(5)]
    stream = b"".join(encode_frame(t, p) for t, p in big)
    decoder = FrameDecoder()
    decoder.feed(stream[:-3])
    assert _drain(decoder) == big[:-1]
    assert decoder.pending() == 40_000 + HEADER_SIZE - 3
    decoder.feed(stream[-3:])
    assert _drain(decoder) == big[-1:]


def test_pending_counts_a_partial_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.pending() == 0
    frame = encode_frame(2, b"hello")
    decoder.feed(frame[:2])
    assert decoder.next_frame() is None and decoder.pending() == 2
    decoder.feed(frame[2:7])
    assert decoder.next_frame() is None and decoder.pending() == 7
    decoder.feed(frame[7:] + frame[:1])
    assert decoder.next_frame() == (2, b"hello")
    assert decoder.pending() == 1


def test_announced_length_is_not_allocated() -> None:
    """A peer announcing 16 MiB and sending 4 bytes costs 4 bytes, not 16 MiB."""
    decoder = FrameDecoder()
    tracemalloc.start()
    try:
        decoder.feed(b"\x02\xff\xff\xff")
        decoder.feed(b"abcd")
        assert decoder.next_frame() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert decoder.pending() == 8


def test_zero_length_payload_is_a_protocol_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(1, b"ok") + b"\x02\x00\x00\x00")
    assert decoder.next_frame() == (1, b"ok")
    with pytest.raises(ProtocolError, match="zero-length.*offset 6"):
        decoder.next_frame()


@pytest.mark.parametrize("type_byte", [5, 6, 0x80, 0xFF])
def test_unknown_type_byte_is_a_protocol_error(type_byte: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(bytes([type_byte, 0, 0, 1, 0]))
    with pytest.raises(ProtocolError, match=f"unknown message type {type_byte}"):
        decoder.next_frame()


def test_bad_header_is_reported_before_the_payload_arrives() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x09\x00\x10")
    assert decoder.next_frame() is None
    decoder.feed(b"\x00")
    with pytest.raises(ProtocolError):
        decoder.next_frame()
