"""A6 framing: a 1-byte type and a 24-bit big-endian length before every FlatBuffers payload.

Sans-I/O on purpose: the server feeds whatever the socket produced and pulls whole frames, so the
same code serves the runner, the gateway-side test kit and the fuzz tests.
"""

from __future__ import annotations

from typing import Optional

HEADER_SIZE = 4
MAX_PAYLOAD = 0xFFFFFF
_MAX_TYPE = 4
_COMPACT_AT = 1 << 16
"""Consumed bytes at the front of the buffer that make ``next_frame`` drop them; also the size
from which a payload is copied out through a memoryview (once) rather than a slice (twice)."""


class ProtocolError(Exception):
    """The peer sent something that is not a valid A6 message; the connection cannot go on."""


class FrameTooLarge(ProtocolError):
    """A payload we would send is over ``MAX_PAYLOAD``: the gateway cannot receive it."""


def encode_frame(msg_type: int, payload: bytes) -> bytes:
    """Prefix ``payload`` with its A6 header."""
    size = len(payload)
    if size > MAX_PAYLOAD:
        raise FrameTooLarge(f"payload of {size} bytes for type {msg_type} is over {MAX_PAYLOAD}")
    return ((msg_type << 24) | size).to_bytes(4, "big") + payload


class FrameDecoder:
    """Turns a byte stream into ``(type, payload)`` frames, incrementally.

    Bytes are appended to one ``bytearray`` and a read offset walks over it, so a frame that
    arrives in many pieces is never re-copied as it grows. Nothing is allocated for a length the
    peer announced but did not send. The consumed prefix is dropped when the buffer empties
    (the usual case: one call per read) or once it is large, keeping ``feed`` amortised O(n).
    """

    __slots__ = ("_buf", "_pos", "_dropped")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._dropped = 0

    def feed(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        self._buf += data

    def pending(self) -> int:
        """Bytes received that are not yet part of a returned frame (a stalled peer has some)."""
        return len(self._buf) - self._pos

    def frames(self, data: bytes) -> list[tuple[int, bytes]]:
        """Every frame that ``data`` completes: ``feed`` and ``next_frame`` in one call.

        While nothing is buffered (nearly always: the gateway writes whole messages and waits
        for the answer), the whole frames at the start of ``data`` are sliced straight out of
        it: one copy each, instead of a copy into the buffer, a copy out and a ``del``. Only a
        partial frame at the end is buffered. Raises ``ProtocolError`` as ``next_frame`` does.
        """
        out: list[tuple[int, bytes]] = []
        if not self._buf:
            pos = 0
            have = len(data)
            while have - pos > HEADER_SIZE:
                size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
                end = pos + HEADER_SIZE + size
                if data[pos] > _MAX_TYPE or size == 0 or end > have:
                    break  # an error, or a partial frame: the general path says which
                out.append((data[pos], data[pos + HEADER_SIZE:end]))
                pos = end
            if pos:
                self._dropped += pos
                if pos == have:
                    return out
                data = data[pos:]
        self._buf += data
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def next_frame(self) -> Optional[tuple[int, bytes]]:
        """The next whole frame, or ``None`` until more bytes arrive.

        Raises ``ProtocolError`` for a type byte outside 0..4 or a zero-length payload; the
        decoder is then unusable, as is the connection.
        """
        buf = self._buf
        pos = self._pos
        have = len(buf)
        if have - pos < HEADER_SIZE:
            return None
        msg_type = buf[pos]
        if msg_type > _MAX_TYPE:
            raise ProtocolError(
                f"unknown message type {msg_type} in the frame header at stream offset {self._dropped + pos}"
            )
        size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
        if size == 0:
            raise ProtocolError(
                f"zero-length payload for message type {msg_type} at stream offset {self._dropped + pos}"
            )
        end = pos + HEADER_SIZE + size
        if end > have:
            return None
        if size < _COMPACT_AT:
            payload = bytes(buf[pos + HEADER_SIZE:end])  # two small copies beat a memoryview
        else:
            with memoryview(buf) as view:
                payload = view[pos + HEADER_SIZE:end].tobytes()
        if end == have or end >= _COMPACT_AT:
            del buf[:end]
            self._dropped += end
            self._pos = 0
        else:
            self._pos = end
        return msg_type, payload
