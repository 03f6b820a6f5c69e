"""Assembling one choice's text from Triton's pieces: broken characters and trailing stop sequences.

Triton writes BYTES tensors into its JSON without checking that they are UTF-8, so a character a
tokenizer decoded in two steps can arrive as raw bytes split over two stream events (or as UTF-16
surrogate halves escaped in two events). Such events only parse with the lenient decoder, which
keeps the raw bytes as surrogate-escaped characters; ``TextStitcher`` turns them back into text
once the rest of the character has arrived. Clean text (the normal case) passes through untouched.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

_REPLACEMENT = "\ufffd"
# Lone surrogates that are not surrogate-escaped raw bytes (U+DC80..U+DCFF) cannot be encoded.
_UNENCODABLE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


class TextStitcher:
    """Rebuilds the characters of one choice across events; one instance per choice."""

    __slots__ = ("_decoder", "_high", "_pending")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._high = ""  # a high surrogate waiting for its low half from the next event
        self._pending = False  # the decoder holds the first bytes of an unfinished character

    def feed(self, text: str, dirty: bool) -> str:
        """The text that is complete after this piece. ``dirty``: it may hold surrogates."""
        if not dirty and not self._pending and not self._high:
            return text
        if not dirty:
            return self.flush() + text
        text = self._high + text
        self._high = ""
        if text and "\ud800" <= text[-1] <= "\udbff":
            self._high = text[-1]
            text = text[:-1]
        # Pair up escaped surrogate halves, then turn the rest back into raw bytes.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        text = _UNENCODABLE.sub(_REPLACEMENT, text)
        data = text.encode("utf-8", "surrogateescape")
        out = self._decoder.decode(data)
        self._pending = bool(self._decoder.getstate()[0])
        return out

    def flush(self) -> str:
        """What is left when no more pieces come: an unfinished character becomes U+FFFD."""
        out = self._decoder.decode(b"", final=True) if self._pending else ""
        if self._high:
            out += _REPLACEMENT
        self._high = ""
        self._pending = False
        return out


def trailing_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest stop sequence that ``text`` ends with (0 when none)."""
    best = 0
    for stop in stops:
        if len(stop) > best and text.endswith(stop):
            best = len(stop)
    return best


def trim_pieces(pieces: list[str], count: int) -> None:
    """Drop the last ``count`` characters of the concatenation of ``pieces``, in place.

    Used on a stream's deltas, where a stop sequence the backend left in the output can span
    several events; the whole stream is buffered, so trimming afterwards is exact.
    """
    index = len(pieces) - 1
    while count > 0 and index >= 0:
        piece = pieces[index]
        if len(piece) > count:
            pieces[index] = piece[: len(piece) - count]
            return
        count -= len(piece)
        pieces[index] = ""
        index -= 1
