"""Token counts for ``usage`` when the backend does not return them.

A ``tokenizer.json`` is tens of megabytes and takes a noticeable time to load, so it is loaded
when a conf is parsed (never per request) and shared by every conf that names the same file.
A file that changed on disk since it was loaded (size or mtime) is loaded again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:  # imported by load_tokenizer, when a conf names a tokenizer: ~8 MB of RSS
    from tokenizers import Tokenizer


class Usage(msgspec.Struct, frozen=True):
    """The three numbers OpenAI reports; only built when both counts are known.

    A Struct, not a frozen dataclass: built once per response, and a frozen dataclass pays an
    ``object.__setattr__`` per field.
    """

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


_lock = threading.Lock()
_cache: dict[str, tuple[int, int, Tokenizer]] = {}


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer in ``path`` (a Hugging Face ``tokenizer.json``), from the cache if unchanged.

    Raises ``ValueError`` naming the file when it cannot be read or is not a tokenizer.
    """
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise ValueError(f"tokenizer file {path!r} cannot be read: {exc.strerror}") from None
    with _lock:
        cached = _cache.get(real)
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        from tokenizers import Tokenizer  # here, not at import: most runners never count tokens

        try:
            tokenizer = Tokenizer.from_file(real)
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise ValueError(f"tokenizer file {path!r} is not a tokenizer.json: {exc}") from None
        _cache[real] = (st.st_mtime_ns, st.st_size, tokenizer)
        return tokenizer


def count_tokens(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens in each text, without the special tokens a tokenizer adds around a prompt.

    One ``encode`` per text rather than ``encode_batch``: the batch call starts the library's
    thread pool, which then misbehaves in worker processes forked afterwards.
    """
    return [len(tokenizer.encode(text, add_special_tokens=False).ids) for text in texts]


def count_prompt_tokens(tokenizer: Tokenizer, prompt: str) -> int:
    """Tokens in a rendered prompt as Triton's backends count them (``num_input_tokens``).

    With the special tokens the tokenizer adds (BOS for Llama): vLLM and TensorRT-LLM's
    preprocessing both tokenize the text prompt with ``add_special_tokens`` on.
    """
    return len(tokenizer.encode(prompt).ids)
