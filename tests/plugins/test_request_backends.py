"""Triton bodies per backend profile and API, upstream paths, and the state header."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from apisix_openai_triton.plugins.request_conf import parse_request_conf
from apisix_openai_triton.plugins.request_transform import Upstream, transform
from apisix_openai_triton.plugins.state import CallState, decode_state

REQUEST = {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.5,
           "top_p": 0.9, "presence_penalty": 0.1, "frequency_penalty": -0.2, "seed": 7,
           "stop": ["END", "###"], "max_tokens": 64}
PROMPT = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" \
         "<|start_header_id|>assistant<|end_header_id|>\n\n"


def run(conf: dict[str, Any], **changes: Any) -> tuple[Upstream, dict[str, Any], CallState]:
    upstream = transform(parse_request_conf(orjson.dumps(conf).decode()), "chat",
                         orjson.dumps({**REQUEST, **changes}), now=1700000000.5)
    return upstream, orjson.loads(upstream.body), decode_state(upstream.state)


def test_vllm_generate_body_has_sampling_parameters_as_a_json_string() -> None:
    upstream, body, state = run({"model": "llama", "backend": "vllm"}, n=2)
    assert upstream.path == "/v2/models/llama/generate"
    sampling = orjson.loads(body.pop("sampling_parameters"))
    assert body == {"text_input": PROMPT, "stream": False, "exclude_input_in_output": True,
                    "return_num_input_tokens": True, "return_num_output_tokens": True,
                    "return_finish_reason": True}
    assert sampling == {"max_tokens": 64, "n": 2, "temperature": 0.5, "top_p": 0.9,
                        "presence_penalty": 0.1, "frequency_penalty": -0.2, "seed": 7,
                        "stop": ["END", "###"]}
    assert (state.n, state.stop, state.backend) == (2, ("END", "###"), "vllm")


def test_vllm_stream_goes_to_generate_stream() -> None:
    upstream, body, state = run({"model": "llama", "backend": "vllm", "model_version": 3},
                                stream=True, stream_options={"include_usage": True})
    assert upstream.path == "/v2/models/llama/versions/3/generate_stream"
    assert body["stream"] is True and body["exclude_input_in_output"] is True
    assert (state.stream, state.include_usage, state.api) == (True, True, "generate_stream")


def test_tensorrtllm_flat_body_with_stop_words_and_template_end_marker() -> None:
    upstream, body, state = run({"model": "ensemble", "backend": "tensorrtllm"})
    assert body == {"text_input": PROMPT, "max_tokens": 64, "temperature": 0.5, "top_p": 0.9,
                    "presence_penalty": 0.1, "frequency_penalty": -0.2, "seed": 7,
                    "stop_words": ["END", "###", "<|eot_id|>"], "exclude_input_in_output": True,
                    "stream": False, "return_num_input_tokens": True,
                    "return_num_output_tokens": True}
    assert state.stop == ("END", "###", "<|eot_id|>")


def test_tensorrtllm_older_names_and_no_counts() -> None:
    _, body, _ = run({"model": "ensemble", "backend": "tensorrtllm", "seed_name": "random_seed",
                      "return_num_tokens": False, "always_stop": []}, seed=-1, stop=None)
    assert body["random_seed"] == 2**64 - 1 and "seed" not in body
    assert "stop_words" not in body and "return_num_input_tokens" not in body


def test_generic_body_is_text_input_plus_parameters() -> None:
    _, body, state = run({"model": "m"}, stop=None)
    assert body == {"text_input": PROMPT, "parameters": {
        "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "presence_penalty": 0.1,
        "frequency_penalty": -0.2, "seed": 7, "exclude_input_in_output": True, "stream": False}}
    assert state.stop == ()


def test_tensorrtllm_infer_tensors_with_batch_dim() -> None:
    upstream, body, state = run({"model": "ensemble", "backend": "tensorrtllm", "api": "infer"},
                                stop="END")
    assert upstream.path == "/v2/models/ensemble/infer" and state.api == "infer"
    tensors = {t["name"]: (t["datatype"], t["shape"], t["data"]) for t in body["inputs"]}
    assert tensors == {
        "text_input": ("BYTES", [1, 1], [PROMPT]),
        "stop_words": ("BYTES", [1, 2], ["END", "<|eot_id|>"]),
        "max_tokens": ("INT32", [1, 1], [64]),
        "temperature": ("FP32", [1, 1], [0.5]),
        "top_p": ("FP32", [1, 1], [0.9]),
        "presence_penalty": ("FP32", [1, 1], [0.1]),
        "frequency_penalty": ("FP32", [1, 1], [-0.2]),
        "seed": ("UINT64", [1, 1], [7]),
        "exclude_input_in_output": ("BOOL", [1, 1], [True]),
        "return_num_input_tokens": ("BOOL", [1, 1], [True]),
        "return_num_output_tokens": ("BOOL", [1, 1], [True]),
    }
    assert set(body) == {"inputs"}


def test_generic_infer_without_batch_dim_and_stream_still_uses_generate_stream() -> None:
    conf = {"model": "m", "api": "infer", "infer": {"batch_dim": False}}
    _, body, _ = run(conf, stop=None)
    assert body == {"parameters": {"max_tokens": 64, "temperature": 0.5, "top_p": 0.9,
                                   "presence_penalty": 0.1, "frequency_penalty": -0.2, "seed": 7,
                                   "exclude_input_in_output": True},
                    "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1],
                                "data": [PROMPT]}]}
    upstream, body, state = run(conf, stream=True)
    assert upstream.path.endswith("/generate_stream") and "text_input" in body
    assert state.api == "generate_stream"


@pytest.mark.parametrize("conf, changes, expected", [
    ({"model": "m"}, {"max_tokens": None}, 512),
    ({"model": "m", "max_tokens_default": 100}, {"max_tokens": None}, 100),
    ({"model": "m", "max_tokens_cap": 32, "max_tokens_default": 16}, {}, 32),
    ({"model": "m"}, {"max_tokens": 10, "max_completion_tokens": 20}, 20),
])
def test_max_tokens_is_defaulted_and_capped_never_unset(conf: dict[str, Any],
                                                        changes: dict[str, Any],
                                                        expected: int) -> None:
    _, body, state = run(conf, **changes)
    assert body["parameters"]["max_tokens"] == expected == state.max_tokens


def test_state_carries_what_the_response_phase_needs() -> None:
    upstream, _, state = run({"models": {"gpt": "llama-8b"}}, stream=True)
    assert upstream.path == "/v2/models/llama-8b/generate_stream"
    assert state.model == "gpt" and state.endpoint == "chat" and state.created == 1700000000
    assert state.id.startswith("chatcmpl-") and len(state.id) == len("chatcmpl-") + 24
    other = run({"models": {"gpt": "llama-8b"}})[2]
    assert other.id != state.id


def test_served_model_name_is_echoed_on_a_single_model_route() -> None:
    assert run({"model": "llama", "served_model_name": "Llama-3-8B"}, model="anything")[2].model \
        == "Llama-3-8B"
    assert run({"model": "llama"})[2].model == "llama"


def test_legacy_completions_prompt_goes_verbatim_with_optional_bos() -> None:
    conf = parse_request_conf('{"model": "m", "backend": "vllm", "bos": true}')
    upstream = transform(conf, "completions", orjson.dumps(
        {"model": "m", "prompt": ["Once upon"], "max_tokens": 5}))
    assert orjson.loads(upstream.body)["text_input"] == "<|begin_of_text|>Once upon"
    state = decode_state(upstream.state)
    assert state.endpoint == "completions" and state.id.startswith("cmpl-")
