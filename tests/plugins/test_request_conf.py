"""The openai-to-triton conf: strict, every refusal names the key; defaults; the JSON Schema."""

from __future__ import annotations

import pytest

from apisix_openai_triton.plugins.openai_to_triton import OpenAIToTriton
from apisix_openai_triton.plugins.request_conf import parse_request_conf
from apisix_openai_triton.runner import ConfError


def test_smallest_conf_and_its_defaults() -> None:
    conf = parse_request_conf('{"model": "llama"}')
    raw = conf.raw
    assert (conf.template.name, raw.backend, raw.api, raw.bos, raw.special_tokens) == (
        "llama3", "generic", "generate", False, "neutralize")
    assert (raw.max_body_bytes, raw.max_tokens_default, raw.max_tokens_cap) == (1048576, 512, 4096)
    assert conf.single is not None and conf.single.paths["generate"] == "/v2/models/llama/generate"


@pytest.mark.parametrize("text, key", [
    ('{"model": "m", "temprature": 1}', "temprature"),
    ('{"model": 5}', "model"),
    ('{"model": "m", "backend": "onnx"}', "backend"),
    ('{"model": "m", "template": "llama2"}', "template"),
    ('{"model": "m", "bos": "yes"}', "bos"),
    ('{"model": "m", "max_body_bytes": 99999999}', "max_body_bytes"),
    ('{"model": "m", "max_tokens_cap": 0}', "max_tokens_cap"),
    ('{"model": "m", "infer": {"batch": true}}', "batch"),
    ('{"model": "a/b"}', "model"),
    ('{"model": "a b"}', "model"),
    ('{"model": "m", "model_version": "1"}', "model_version"),
    ('{"models": {"x": "bad%name"}}', "models"),
])
def test_unknown_keys_and_wrong_types_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfError, match=key):
        parse_request_conf(text)


@pytest.mark.parametrize("text, words", [
    ("", "model"),
    ("{}", "model"),
    ('{"model": "m", "models": {"a": "b"}}', "exactly one"),
    ('{"models": {}}', "models"),
    ('{"models": {"a": "b"}, "default_model": "c"}', "default_model"),
    ('{"models": {"a": "b"}, "served_model_name": "c"}', "served_model_name"),
    ('{"model": "m", "template": "chatml", "chat_template": "x"}', "chat_template"),
    ('{"model": "m", "mistral_variant": "v1"}', "mistral_variant"),
    ('{"model": "m", "bos_token": "<s>"}', "bos_token"),
    ('{"model": "m", "max_tokens_default": 9000}', "max_tokens_default"),
    ('{"model": "m", "backend": "vllm", "api": "infer"}', "decoupled"),
    ('{"model": "m", "backend": "vllm", "seed_name": "random_seed"}', "seed_name"),
    ("[1]", "object"),
    ("{not json", "JSON"),
])
def test_inconsistent_confs_are_refused_with_the_reason(text: str, words: str) -> None:
    with pytest.raises(ConfError, match=words):
        parse_request_conf(text)


def test_plugin_exposes_name_schema_and_prefetch() -> None:
    plugin = OpenAIToTriton()
    assert plugin.name == "openai-to-triton" and plugin.prefetch_body is True
    schema = plugin.conf_schema
    assert schema is not None
    props = schema["$defs"]["RawConf"]["properties"]
    assert {"model", "models", "template", "backend", "api", "bos", "special_tokens",
            "max_body_bytes", "infer"} <= set(props)
    assert schema["$defs"]["RawConf"]["additionalProperties"] is False
    assert isinstance(plugin.parse_conf('{"model": "m"}').raw.model, str)
