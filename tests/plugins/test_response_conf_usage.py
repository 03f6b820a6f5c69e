"""The triton-to-openai conf, and token counting with a real ``tokenizers`` tokenizer.json."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from openai.types.chat import ChatCompletion
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from apisix_openai_triton.plugins.response_conf import (
    CONF_SCHEMA,
    DEFAULT_MAX_BODY_BYTES,
    parse_response_conf,
)
from apisix_openai_triton.plugins.response_transform import convert
from apisix_openai_triton.plugins.state import CallState
from apisix_openai_triton.plugins.usage import count_tokens, load_tokenizer
from apisix_openai_triton.runner import ConfError


def write_tokenizer(path: Path, corpus: str) -> Path:
    """A small word-level tokenizer trained here, saved as a Hugging Face tokenizer.json."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([corpus], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tokenizer.save(str(path))
    return path


@pytest.fixture
def tokenizer_file(tmp_path: Path) -> Path:
    return write_tokenizer(tmp_path / "tokenizer.json", "the cat sat on the mat .")


def test_empty_conf_means_defaults() -> None:
    for raw in ("", "  ", "{}", "null"):
        conf = parse_response_conf(raw)
        assert conf.tokenizer is None and conf.usage_headers is None
        assert conf.max_body_bytes == DEFAULT_MAX_BODY_BYTES and conf.expose_upstream_errors


@pytest.mark.parametrize("raw, words", [
    ('{"tokeniser": "x"}', "tokeniser"),
    ('{"usage_headers": 3}', "usage_headers"),
    ('{"usage_headers": "bad header!"}', "usage_headers"),
    ('{"max_body_bytes": 100}', "max_body_bytes"),
    ('{"max_body_bytes": 99999999999}', "max_body_bytes"),
    ('{"expose_upstream_errors": "yes"}', "expose_upstream_errors"),
    ('{"tokenizer": "/nonexistent/tokenizer.json"}', "tokenizer"),
    ("[1]", "object"),
    ("{", "JSON"),
])
def test_bad_confs_are_refused_by_name(raw: str, words: str) -> None:
    with pytest.raises(ConfError, match=words):
        parse_response_conf(raw)


def test_a_file_that_is_not_a_tokenizer(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ConfError, match="not a tokenizer.json"):
        parse_response_conf(orjson.dumps({"tokenizer": str(bad)}).decode())


def test_usage_header_names() -> None:
    assert parse_response_conf('{"usage_headers": true}').usage_headers == (
        "x-openai-triton-prompt-tokens", "x-openai-triton-completion-tokens", "x-openai-triton-total-tokens")
    assert parse_response_conf('{"usage_headers": "X-LLM-"}').usage_headers == (
        "x-llm-prompt-tokens", "x-llm-completion-tokens", "x-llm-total-tokens")
    assert parse_response_conf('{"usage_headers": false}').usage_headers is None


def test_schema_lists_every_key() -> None:
    assert set(CONF_SCHEMA["properties"]) == {"tokenizer", "usage_headers", "max_body_bytes",
                                             "expose_upstream_errors"}
    assert CONF_SCHEMA["additionalProperties"] is False


def test_tokenizer_is_loaded_once_and_shared(tokenizer_file: Path) -> None:
    raw = orjson.dumps({"tokenizer": str(tokenizer_file)}).decode()
    first, second = parse_response_conf(raw), parse_response_conf(raw)
    assert first.tokenizer is not None and first.tokenizer is second.tokenizer
    assert count_tokens(first.tokenizer, ["the cat sat", "", "the mat ."]) == [3, 0, 3]


def test_changed_tokenizer_file_is_reloaded(tmp_path: Path) -> None:
    path = write_tokenizer(tmp_path / "t.json", "a b")
    before = load_tokenizer(str(path))
    write_tokenizer(path, "a b c d e f g h")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    after = load_tokenizer(str(path))
    assert after is not before and after.get_vocab_size() > before.get_vocab_size()


def test_tokenizer_counts_when_backend_gives_none(tokenizer_file: Path) -> None:
    conf = parse_response_conf(orjson.dumps({"tokenizer": str(tokenizer_file)}).decode())
    st = CallState("m", "chat", "chatcmpl-1", 1, False, False, 1, 3, "tensorrtllm", "generate", ())
    # completion counted with the tokenizer; prompt from the backend
    out = convert(conf, st, 200, b'{"text_output":"the cat sat","num_input_tokens":11}')
    completion = ChatCompletion.model_validate_json(out.body)
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 3)
    assert completion.choices[0].finish_reason == "length"  # 3 tokens counted == max_tokens 3
    # prompt from the request phase's count
    out = convert(conf, st, 200, b'{"text_output":"the cat"}', prompt_tokens=5)
    usage = orjson.loads(out.body)["usage"]
    assert usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert orjson.loads(out.body)["choices"][0]["finish_reason"] == "stop"
    # no prompt count anywhere: no usage at all (never half, never zero)
    out = convert(conf, st, 200, b'{"text_output":"the cat"}')
    assert "usage" not in orjson.loads(out.body)


def test_backend_counts_win_over_tokenizer(tokenizer_file: Path) -> None:
    conf = parse_response_conf(orjson.dumps({"tokenizer": str(tokenizer_file)}).decode())
    st = CallState("m", "chat", "chatcmpl-1", 1, False, False, 1, 16, "vllm", "generate", ())
    out = convert(conf, st, 200, b'{"text_output":"the cat","num_input_tokens":4,"num_output_tokens":9}')
    assert orjson.loads(out.body)["usage"]["completion_tokens"] == 9
