"""The stand-in model's text: deterministic, word tokens, finish reasons and both stop styles."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from apisix_openai_triton.tools.mock_triton_text import (
    MAX_OUTPUT_TOKENS,
    VOCABULARY,
    complete,
    count_tokens,
    natural_length,
)

PROMPT = "Tell me about the weather in Paris"


def fresh(words: list[str], start: int) -> int:
    """The first index from ``start`` whose word does not occur in the text before it."""
    return next(i for i in range(start, len(words)) if words[i] not in " ".join(words[:i]))


def test_same_prompt_same_text_and_different_prompt_differs() -> None:
    a = complete(PROMPT, max_tokens=100)
    assert a == complete(PROMPT, max_tokens=100)
    assert a.text != complete(PROMPT + "!", max_tokens=100).text
    assert a.text != complete(PROMPT, max_tokens=100, seed=7).text
    assert a.text != complete(PROMPT, max_tokens=100, choice=1).text


def test_natural_end_is_stop_with_a_full_stop_and_a_cap_is_length() -> None:
    natural = natural_length(PROMPT)
    assert 8 + count_tokens(PROMPT) <= natural <= 15 + count_tokens(PROMPT)
    free = complete(PROMPT, max_tokens=natural + 1)
    assert (free.finish_reason, free.tokens) == ("stop", natural)
    assert free.text.endswith(".")
    capped = complete(PROMPT, max_tokens=5)
    assert (capped.finish_reason, capped.tokens) == ("length", 5)
    assert not capped.text.endswith(".")
    assert free.text.startswith(capped.text)


def test_natural_end_needs_a_spare_token_so_count_equal_to_max_means_length() -> None:
    natural = natural_length(PROMPT)
    exact = complete(PROMPT, max_tokens=natural)
    assert (exact.finish_reason, exact.tokens) == ("length", natural)


def test_pieces_are_words_and_join_to_the_text() -> None:
    result = complete(PROMPT, max_tokens=30)
    assert "".join(result.pieces) == result.text
    first = result.pieces[0]
    assert first == first[:1].upper() + first[1:] and not first.startswith(" ")
    assert all(p.startswith(" ") for p in result.pieces[1:])
    assert len(result.text.split()) == result.tokens


def test_vllm_style_stop_removes_the_stop_string_and_what_follows() -> None:
    words = complete(PROMPT, max_tokens=40).text.split()
    index = fresh(words, 3)
    stop = words[index]
    result = complete(PROMPT, max_tokens=40, stop=("never-there", stop))
    assert result.finish_reason == "stop"
    assert stop not in result.text
    assert result.text == " ".join(words[:index]) + " "
    assert result.tokens == index + 1  # the token that completed the stop string was generated
    assert "".join(result.pieces) == result.text


def test_vllm_style_stop_inside_a_word_and_include_stop() -> None:
    words = complete(PROMPT, max_tokens=40).text.split()
    stop = words[fresh(words, 3)]
    cut = complete(PROMPT, max_tokens=40, stop=(stop,))
    assert stop not in cut.text and cut.finish_reason == "stop"
    kept = complete(PROMPT, max_tokens=40, stop=(stop,), include_stop=True)
    assert kept.text == cut.text + stop


def test_trtllm_style_stop_matches_on_token_end_and_keeps_the_stop_word() -> None:
    words = complete(PROMPT, max_tokens=40).text.split()
    index = fresh(words, 3)
    stop = " " + words[index]
    result = complete(PROMPT, max_tokens=40, stop=(stop,), stop_at_token_end=True,
                      include_stop=True)
    assert result.text == " ".join(words[: index + 1])
    assert result.tokens == index + 1
    # Part of a token matches anywhere (vLLM) but never on token boundaries (TensorRT-LLM).
    prefix = next(" " + w[:-1] for w in words[1:]
                  if len(w) > 2 and not any(v.endswith(w[:-1]) for v in VOCABULARY))
    anywhere = complete(PROMPT, max_tokens=40, stop=(prefix,))
    assert anywhere.finish_reason == "stop" and prefix not in anywhere.text
    partial = complete(PROMPT, max_tokens=40, stop=(prefix,), stop_at_token_end=True,
                       include_stop=True)
    assert partial == complete(PROMPT, max_tokens=40)


def test_stop_spanning_two_tokens() -> None:
    words = complete(PROMPT, max_tokens=40).text.split()
    index = next(i for i in range(2, len(words) - 1)
                 if words[i][-1:] + " " + words[i + 1][:1] not in " ".join(words[: i + 1]))
    stop = words[index][-1:] + " " + words[index + 1][:1]
    result = complete(PROMPT, max_tokens=40, stop=(stop,))
    assert result.text == " ".join(words[: index + 1])[:-1]
    assert "".join(result.pieces) == result.text
    assert result.tokens == index + 2


def test_empty_stop_strings_are_ignored() -> None:
    assert complete(PROMPT, max_tokens=9, stop=("",)) == complete(PROMPT, max_tokens=9)


def test_min_tokens_ignore_eos_and_the_output_cap() -> None:
    natural = natural_length(PROMPT)
    longer = complete(PROMPT, max_tokens=500, min_tokens=natural + 10)
    assert (longer.tokens, longer.finish_reason) == (natural + 10, "stop")
    forced = complete(PROMPT, max_tokens=200, ignore_eos=True)
    assert (forced.tokens, forced.finish_reason) == (200, "length")
    capped = complete(PROMPT, max_tokens=10**9, ignore_eos=True)
    assert capped.tokens == MAX_OUTPUT_TOKENS


def test_unicode_is_exercised() -> None:
    non_ascii = [w for w in VOCABULARY if not w.isascii()]
    assert len(non_ascii) >= 10
    assert any(ord(c) > 0xFFFF for w in non_ascii for c in w)  # outside the BMP (emoji)
    texts = "".join(complete(f"prompt {i}", max_tokens=64).text for i in range(20))
    assert not texts.isascii()


@settings(max_examples=200, deadline=None)
@given(prompt=st.text(max_size=200), max_tokens=st.integers(1, 80),
       stop=st.lists(st.text(min_size=0, max_size=6), max_size=3))
def test_invariants_for_any_prompt(prompt: str, max_tokens: int, stop: list[str]) -> None:
    for token_end in (False, True):
        result = complete(prompt, max_tokens=max_tokens, stop=tuple(stop),
                          stop_at_token_end=token_end, include_stop=token_end)
        assert "".join(result.pieces) == result.text
        assert 1 <= result.tokens <= max_tokens
        assert result.finish_reason in ("stop", "length")
        if result.finish_reason == "length":
            assert result.tokens == max_tokens
