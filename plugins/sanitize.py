"""Special-token neutralisation: user text must never open or close a turn of the prompt.

A chat template wraps each message in marker strings (``<|start_header_id|>``, ``<|im_end|>``,
``[INST]``, ``<start_of_turn>``...). Triton's tokenizer turns those strings into the special ids
wherever they appear, so a message that contains one can forge a system turn. Every marker found
in a text is broken by a ZERO WIDTH SPACE (U+200B) after its first character: the exact string the
tokenizer looks for is gone, the text still reads the same, and U+200B is a starter character that
no Unicode normalisation form removes or composes (NFC/NFKC keep it), so neither the tokenizer's
normaliser nor ours can merge the marker back.

Look-alikes: a tokenizer with an NFKC normaliser would turn ``＜｜eot_id｜＞`` (fullwidth) into
the real marker, so texts are also checked in NFKC form; when only that form holds a marker, the
message is replaced by its neutralised NFKC form (lossy for other compatibility characters of
that one message, which is the price of keeping the turn structure intact).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Literal

from .errors import invalid

Policy = Literal["neutralize", "reject"]

BREAK = "\u200b"

# Any "<|name|>" marker: the whole Llama 3 family (incl. its 250 reserved tokens), ChatML, Qwen,
# Phi... U+200B is excluded from the name so a neutralised marker never matches again.
_PIPE_MARKER = r"<\|[^\s|<>\u200b]{1,128}\|>"

# Literal markers of the built-in templates that do not have the "<|...|>" shape.
BUILTIN_MARKERS: frozenset[str] = frozenset({
    # Mistral (sentencepiece and tekken control tokens)
    "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    # Gemma
    "<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>",
})

# Every marker starts with "<" or "["; these are all the code points whose NFKC form contains
# either (checked by a test over the whole code space). Text with none of them needs no search.
LOOKALIKE_OPENERS = "\ufe47\ufe64\uff1c\uff3b"


def _may_hold_marker(text: str) -> bool:
    # Substring tests run at memchr speed; a regex character class is ~50x slower on non-ASCII.
    if "<" in text or "[" in text:
        return True
    if text.isascii():
        return False
    return ("\uff1c" in text or "\uff3b" in text or "\ufe64" in text or "\ufe47" in text)

# What a literal scan of a Hugging Face chat_template counts as a marker.
_TEMPLATE_MARKER = re.compile(r"<\|[^\s|<>]{1,128}\|>|</?[A-Za-z_][A-Za-z0-9_]{0,63}>"
                              r"|\[/?[A-Z][A-Z_]{1,63}\]")


def scan_template_markers(source: str) -> set[str]:
    """Marker-shaped literals in a chat template's source, to protect them like built-in ones."""
    return set(_TEMPLATE_MARKER.findall(source))


class Sanitizer:
    """One compiled pattern per conf; ``clean`` is called for every piece of user text."""

    __slots__ = ("_pattern", "_reject", "_fast")

    def __init__(self, policy: Policy, extra_markers: Iterable[str] = ()) -> None:
        literals = sorted({*BUILTIN_MARKERS, *(t for t in extra_markers if t)},
                          key=len, reverse=True)
        self._pattern = re.compile("|".join([_PIPE_MARKER, *map(re.escape, literals)]))
        self._reject = policy == "reject"
        # A conf marker that starts with another character turns the opener shortcut off.
        self._fast = all(t[0] in "<[" for t in literals)

    @staticmethod
    def _break(match: re.Match[str]) -> str:
        token = match.group()
        return token[0] + BREAK + token[1:]

    def clean(self, text: str, param: str) -> str:
        """``text`` with every marker broken, or a 400 naming ``param`` in reject mode."""
        if self._fast and not _may_hold_marker(text):
            return text
        pattern = self._pattern
        hit = pattern.search(text)
        folded = None
        if not text.isascii():
            nfkc = unicodedata.normalize("NFKC", text)
            if nfkc != text:
                folded_hit = pattern.search(nfkc)
                if folded_hit is not None:
                    folded, hit = nfkc, hit or folded_hit
        if hit is None:
            return text
        if self._reject:
            raise invalid(f"{param} contains the special token {hit.group()!r}, which this "
                          "route does not accept in message text", param, "special_token")
        return pattern.sub(self._break, text if folded is None else folded)

    def clean_json(self, value: object, param: str) -> object:
        """Every string (keys too) of a JSON value cleaned, e.g. tool definitions."""
        if isinstance(value, str):
            return self.clean(value, param)
        if isinstance(value, list):
            return [self.clean_json(v, param) for v in value]
        if isinstance(value, dict):
            return {self.clean(k, param): self.clean_json(v, param) for k, v in value.items()}
        return value
