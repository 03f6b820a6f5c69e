"""openai-to-triton's ``tokenizer``: loaded once per conf, counting prompts only when needed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from apisix_openai_triton.plugins.request_conf import CONF_SCHEMA, parse_request_conf
from apisix_openai_triton.plugins.request_transform import transform
from apisix_openai_triton.plugins.state import decode_state
from apisix_openai_triton.runner import ConfError


@pytest.fixture
def tokenizer_path(tmp_path: Path) -> str:
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(["how many words are in this prompt"],
                                  trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return str(path)


def conf(tokenizer: str, **fields: object) -> str:
    return orjson.dumps({"model": "m", "tokenizer": tokenizer, **fields}).decode()


CHAT = orjson.dumps({"messages": [{"role": "user", "content": "how many words"}]})


@pytest.mark.parametrize("fields, counted", [
    ({}, True),  # generic: Triton returns no counts
    ({"backend": "tensorrtllm", "return_num_tokens": False}, True),
    ({"backend": "tensorrtllm"}, False),  # asked for num_input_tokens
    ({"backend": "vllm"}, False),
])
def test_prompts_are_counted_only_when_the_backend_is_not_asked(
    tokenizer_path: str, fields: dict[str, object], counted: bool
) -> None:
    parsed = parse_request_conf(conf(tokenizer_path, **fields))
    upstream = transform(parsed, "chat", CHAT)
    state = decode_state(upstream.state)
    if not counted:
        assert parsed.prompt_tokenizer is None and state.prompt_tokens is None
        return
    prompt = orjson.loads(upstream.body)["text_input"]
    expected = Tokenizer.from_file(tokenizer_path).encode(prompt).ids
    assert state.prompt_tokens == len(expected) > 3  # the words, and [UNK] for the markers


def test_legacy_completions_prompts_are_counted_too(tokenizer_path: str) -> None:
    upstream = transform(parse_request_conf(conf(tokenizer_path)), "completions",
                         b'{"prompt": "how many words are in this prompt"}')
    assert decode_state(upstream.state).prompt_tokens == 7


def test_without_a_tokenizer_nothing_is_counted() -> None:
    upstream = transform(parse_request_conf('{"model": "m"}'), "chat", CHAT)
    assert decode_state(upstream.state).prompt_tokens is None


@pytest.mark.parametrize("value, words", [
    ("/nonexistent/tokenizer.json", "cannot be read"),
    ("", "tokenizer"),
])
def test_a_bad_tokenizer_is_refused_at_conf_time(value: str, words: str) -> None:
    with pytest.raises(ConfError, match=words):
        parse_request_conf(conf(value, backend="vllm"))


def test_a_file_that_is_not_a_tokenizer(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(ConfError, match="`tokenizer`.*not a tokenizer.json"):
        parse_request_conf(conf(str(bad)))


def test_the_schema_documents_the_key() -> None:
    schema = CONF_SCHEMA["$defs"]["RawConf"]["properties"]["tokenizer"]
    assert {"type": "string", "maxLength": 4096, "minLength": 1} in schema["anyOf"]
