"""``FrameDecoder.frames``: whole frames sliced out of a read give what ``feed`` would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apisix_openai_triton.runner.protocol.framing import FrameDecoder, ProtocolError, encode_frame

FRAME = st.tuples(st.integers(0, 4), st.binary(min_size=1, max_size=40))


def fed(chunks: list[bytes]) -> list[tuple[int, bytes]]:
    """The frames of the general path: feed, then next_frame until None."""
    decoder = FrameDecoder()
    out = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    return out


@given(st.lists(FRAME, min_size=1, max_size=6), st.lists(st.integers(0, 300), max_size=6))
def test_any_split_of_the_stream_yields_the_same_frames(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(t, p) for t, p in frames)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in zip(points, points[1:])]
    decoder = FrameDecoder()
    got = [frame for chunk in chunks for frame in decoder.frames(chunk)]
    assert got == frames == fed(chunks)
    assert decoder.pending() == 0


def test_whole_frames_and_a_partial_one_in_one_read() -> None:
    decoder = FrameDecoder()
    data = encode_frame(3, b"body") + encode_frame(3, b"var") + encode_frame(2, b"next")[:5]
    assert decoder.frames(data) == [(3, b"body"), (3, b"var")]
    assert decoder.pending() == 5
    assert decoder.frames(b"ext") == [(2, b"next")]
    assert decoder.pending() == 0


@pytest.mark.parametrize("bad, offset", [(b"\x09\x00\x00\x01q", 7), (b"\x01\x00\x00\x00", 7)])
def test_errors_name_the_stream_offset_after_sliced_frames(bad: bytes, offset: int) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match=f"stream offset {offset}"):
        decoder.frames(encode_frame(1, b"xyz") + bad)
