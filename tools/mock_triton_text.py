"""The stand-in model's words: deterministic text, one token per word, and both stop-string styles.

Tests on both sides of the gateway must be able to predict the answer without running a model,
so the text depends only on the prompt, the seed and the choice index (a hash picks each word
from a fixed vocabulary). The vocabulary mixes in accented, non-Latin, right-to-left and emoji
words so that every test run pushes real unicode through JSON, SSE and the OpenAI SDK.

Token accounting is deliberately simple and documented: a prompt has as many tokens as it has
whitespace-separated words (``len(prompt.split())``); each generated word is one token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

VOCABULARY: tuple[str, ...] = (
    "lorem", "ipsum", "dolor", "amet", "consectetur", "adipiscing", "elit", "tempor",
    "incididunt", "labore", "magna", "aliqua", "veniam", "nostrud", "exercitation",
    "ullamco", "laboris", "aliquip", "commodo", "consequat", "aute", "irure", "reprehenderit",
    "voluptate", "cillum", "fugiat", "nulla", "pariatur", "excepteur", "occaecat",
    "cupidatat", "proident", "culpa", "officia", "deserunt", "mollit", "anim", "laborum",
    "café", "naïve", "Grüße", "façade", "smörgåsbord", "ñandú", "Ελλάδα", "привет",
    "東京", "日本語", "中文", "한국어", "مرحبا", "שלום", "🚀", "😀", "👍🏽", "€uro",
)
"""The words the model says. Entries are whole tokens; none is a substring of another."""

MAX_OUTPUT_TOKENS = 4096
"""The model's context: no answer is longer, whatever max_tokens says (finish ``length``)."""

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One choice's answer.

    ``pieces`` is what a streaming backend sends, one element per generated token (a piece may be
    empty when a stop string swallowed it); ``"".join(pieces) == text`` always holds.
    """

    pieces: tuple[str, ...]
    text: str
    finish_reason: FinishReason

    @property
    def tokens(self) -> int:
        return len(self.pieces)


def count_tokens(text: str) -> int:
    """The mock's tokenizer: whitespace-separated words."""
    return len(text.split())


def natural_length(prompt: str, *, seed: int | None = None, choice: int = 0) -> int:
    """How many words the model says before it would emit end-of-sequence on its own.

    Short prompts get short answers (8 to 15 words plus one per prompt word, at most 63), so a
    small ``max_tokens`` gives finish ``length`` and a large one gives finish ``stop``.
    """
    return _natural(_key(prompt, seed, choice), prompt)


def _natural(key: bytes, prompt: str) -> int:
    # Only the first 48 words matter: a bounded split keeps long prompts cheap.
    return 8 + _hash(key) % 8 + min(len(prompt.split(None, 48)), 48)


def complete(
    prompt: str,
    *,
    max_tokens: int,
    stop: tuple[str, ...] = (),
    seed: int | None = None,
    choice: int = 0,
    stop_at_token_end: bool = False,
    include_stop: bool = False,
    min_tokens: int = 0,
    ignore_eos: bool = False,
) -> Completion:
    """Generate one choice.

    Stop strings follow the two real behaviours: vLLM finds a stop string anywhere in the new text
    and cuts it off (``include_stop=False``); TensorRT-LLM matches stop words on token boundaries
    and leaves the stop word at the end (``stop_at_token_end=True, include_stop=True``).

    The natural end costs one hidden end-of-sequence token, so the answer stops naturally only
    when it is shorter than ``max_tokens``: a token count equal to max_tokens always means
    ``length`` (the rule a runner must use for TensorRT-LLM, which reports no finish reason).
    """
    key = _key(prompt, seed, choice)
    natural = max(_natural(key, prompt), min_tokens)
    limit = min(max_tokens, MAX_OUTPUT_TOKENS)
    finish: FinishReason
    if ignore_eos or natural >= limit:
        count, finish = limit, "length"
    else:
        count, finish = natural, "stop"
    pieces = [_word(key, i, first=i == 0) for i in range(count)]
    if finish == "stop":
        pieces[-1] += "."
    stops = tuple(s for s in stop if s)
    if stops:
        cut = _apply_stop(pieces, stops, stop_at_token_end, include_stop)
        if cut is not None:
            return cut
    return Completion(tuple(pieces), "".join(pieces), finish)


def _apply_stop(
    pieces: list[str], stops: tuple[str, ...], token_end: bool, include: bool
) -> Completion | None:
    text = ""
    for index, piece in enumerate(pieces):
        before = len(text)
        text += piece
        match = _find_stop(text, before, stops, token_end)
        if match is None:
            continue
        start, length = match
        final = text[: start + length] if include else text[:start]
        kept: list[str] = []
        done = 0
        end = 0
        for emitted in pieces[: index + 1]:
            end += len(emitted)
            upto = min(end, len(final))
            kept.append(final[done:upto])
            done = upto
        return Completion(tuple(kept), final, "stop")
    return None


def _find_stop(
    text: str, before: int, stops: tuple[str, ...], token_end: bool
) -> tuple[int, int] | None:
    """The earliest stop string completed by the latest token, as (start, length)."""
    best: tuple[int, int] | None = None
    for stop in stops:
        if token_end:
            start = len(text) - len(stop) if text.endswith(stop) else -1
        else:
            start = text.find(stop, max(0, before - len(stop) + 1))
        if start >= 0 and (best is None or start < best[0]):
            best = (start, len(stop))
    return best


def _key(prompt: str, seed: int | None, choice: int) -> bytes:
    """A short digest of everything the answer depends on, so long prompts are hashed once."""
    head = f"{seed if seed is not None else ''}\x00{choice}\x00".encode()
    return hashlib.blake2b(head + prompt.encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _word(key: bytes, index: int, *, first: bool) -> str:
    word = VOCABULARY[_hash(key + index.to_bytes(4, "big")) % len(VOCABULARY)]
    return word[:1].upper() + word[1:] if first else " " + word
