"""Triton request bodies per backend profile and API (facts sheet sections 1-4, 10).

Rules kept here: generate bodies are flat keys, infer bodies are tensor lists, never mixed;
``exclude_input_in_output`` is always on (both backends echo the prompt otherwise) and
``max_tokens`` is always set (vLLM's default is 16). List values go where Triton accepts
them: inside vLLM's ``sampling_parameters`` JSON string, or as TensorRT-LLM's ``stop_words``
tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .chat_request import Sampling

Backend = Literal["vllm", "tensorrtllm", "generic"]
BodyApi = Literal["generate", "infer"]
UINT64 = 2**64


@dataclass(frozen=True, slots=True)
class BodyOptions:
    """Per-conf choices that shape every body."""

    backend: Backend
    seed_name: str = "seed"
    always_stop: tuple[str, ...] = ()
    """Stop strings added for backends that stop only on the tokenizer's EOS."""
    return_num_tokens: bool = True
    """Ask TensorRT-LLM for token counts (inputs present in TensorRT-LLM 2025 and later)."""
    batch_dim: bool = True
    """Infer tensors carry a leading batch dimension (model config ``max_batch_size > 0``)."""


def model_base_path(model: str, version: int | None) -> str:
    """``/v2/models/{model}[/versions/{v}]``. Not percent-encoded: the gateway escapes the
    rewritten path itself (ngx_escape_uri, which also escapes ``%``), and the conf parser
    refuses names with ``/ % ? #``, whitespace or control characters."""
    base = "/v2/models/" + model
    return base if version is None else f"{base}/versions/{version}"


def stop_list(options: BodyOptions, sampling: Sampling) -> tuple[str, ...]:
    """The stop strings sent upstream (and so the ones the response plugin trims)."""
    if options.backend == "vllm" or not options.always_stop:
        return sampling.stop
    return sampling.stop + tuple(s for s in options.always_stop if s not in sampling.stop)


def _sampling_fields(sampling: Sampling, seed_name: str, unsigned_seed: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"max_tokens": sampling.max_tokens}
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = getattr(sampling, key)
        if value is not None:
            fields[key] = value
    if sampling.seed is not None:
        fields[seed_name] = sampling.seed % UINT64 if unsigned_seed else sampling.seed
    return fields


def build_body(options: BodyOptions, api: BodyApi, prompt: str, sampling: Sampling,
               stream: bool) -> bytes:
    """The JSON body for ``generate``/``generate_stream`` (api ``generate``) or ``infer``."""
    backend = options.backend
    stop = stop_list(options, sampling)
    if backend == "vllm":
        params = _sampling_fields(sampling, "seed", False)
        if sampling.n > 1:
            params["n"] = sampling.n
        if stop:
            params["stop"] = list(stop)
        return orjson.dumps({
            "text_input": prompt,
            "stream": stream,
            "exclude_input_in_output": True,
            "sampling_parameters": orjson.dumps(params).decode(),
            "return_num_input_tokens": True,
            "return_num_output_tokens": True,
            "return_finish_reason": True,
        })
    trt = backend == "tensorrtllm"
    fields = _sampling_fields(sampling, options.seed_name, trt)
    if api == "infer":
        return _infer_body(options, prompt, fields, stop, trt)
    if trt:
        body: dict[str, Any] = {"text_input": prompt, **fields}
        if stop:
            body["stop_words"] = list(stop)
        body["exclude_input_in_output"] = True
        body["stream"] = stream
        if options.return_num_tokens:
            body["return_num_input_tokens"] = True
            body["return_num_output_tokens"] = True
        return orjson.dumps(body)
    parameters = dict(fields)
    if stop:
        parameters["stop_words"] = list(stop)
    parameters["exclude_input_in_output"] = True
    parameters["stream"] = stream
    return orjson.dumps({"text_input": prompt, "parameters": parameters})


# TensorRT-LLM ensemble input types (facts sheet 2.1).
_TRT_TYPES = {
    "max_tokens": "INT32", "temperature": "FP32", "top_p": "FP32", "presence_penalty": "FP32",
    "frequency_penalty": "FP32", "seed": "UINT64", "random_seed": "UINT64",
}


def _infer_body(options: BodyOptions, prompt: str, fields: dict[str, Any],
                stop: tuple[str, ...], trt: bool) -> bytes:
    def tensor(name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
        shape = [1, len(data)] if options.batch_dim else [len(data)]
        return {"name": name, "datatype": datatype, "shape": shape, "data": data}

    inputs = [tensor("text_input", "BYTES", [prompt])]
    if stop:
        inputs.append(tensor("stop_words", "BYTES", list(stop)))
    if not trt:
        parameters = dict(fields, exclude_input_in_output=True)
        return orjson.dumps({"parameters": parameters, "inputs": inputs})
    inputs.extend(tensor(k, _TRT_TYPES.get(k, "FP32"), [v]) for k, v in fields.items())
    inputs.append(tensor("exclude_input_in_output", "BOOL", [True]))
    if options.return_num_tokens:
        inputs.append(tensor("return_num_input_tokens", "BOOL", [True]))
        inputs.append(tensor("return_num_output_tokens", "BOOL", [True]))
    return orjson.dumps({"inputs": inputs})
