"""What each stand-in model declares: inputs, outputs, batching and transaction policy.

Triton maps a generate request onto a model by the model's declared input names, so the mock
must declare the same inputs as the real backends (facts sheet sections 2 and 3) for the same
JSON to succeed or fail in the same way. The metadata and config endpoints are answered from
these declarations too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Backend = Literal["vllm", "tensorrtllm", "generic"]
BACKENDS: tuple[str, ...] = get_args(Backend)


class ModelSpecError(ValueError):
    """A ``--model`` value that names no valid backend or policy."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``dims`` excludes the batch dimension, as in config.pbtxt."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backend: Backend
    decoupled: bool
    max_batch_size: int
    platform: str
    backend_name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    seed_name: str = "seed"
    version: str = "1"

    def input(self, name: str) -> TensorSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output(self, name: str) -> TensorSpec | None:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        return None

    def full_dims(self, spec: TensorSpec) -> list[int]:
        """Dims as metadata shows them: with the -1 batch dimension when the model batches."""
        return ([-1] if self.max_batch_size > 0 else []) + list(spec.dims)


_CONFIG_TYPES = {
    "BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
    "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64", "FP32": "TYPE_FP32",
}


def _t(name: str, datatype: str, *dims: int, optional: bool = True) -> TensorSpec:
    return TensorSpec(name, datatype, dims, optional)


def vllm_model(name: str) -> ModelSpec:
    """The vLLM backend's auto-completed config: always decoupled, no batching (facts 3)."""
    return ModelSpec(
        name=name, backend="vllm", decoupled=True, max_batch_size=0, platform="vllm",
        backend_name="vllm",
        inputs=(
            _t("text_input", "BYTES", 1, optional=False),
            _t("image", "BYTES", -1),
            _t("stream", "BOOL", 1),
            _t("sampling_parameters", "BYTES", 1),
            _t("exclude_input_in_output", "BOOL", 1),
            _t("return_finish_reason", "BOOL", 1),
            _t("return_cumulative_logprob", "BOOL", 1),
            _t("return_logprobs", "BOOL", 1),
            _t("return_num_input_tokens", "BOOL", 1),
            _t("return_num_output_tokens", "BOOL", 1),
        ),
        outputs=(
            _t("text_output", "BYTES", -1),
            _t("finish_reason", "BYTES", -1),
            _t("cumulative_logprob", "FP32", -1),
            _t("logprobs", "BYTES", -1),
            _t("num_input_tokens", "UINT32", 1),
            _t("num_output_tokens", "UINT32", -1),
        ),
    )


def tensorrtllm_model(name: str, *, decoupled: bool = True, legacy: bool = False) -> ModelSpec:
    """The TensorRT-LLM ``ensemble`` (facts 2).

    ``legacy`` gives the input names from before 2025-05 (``random_seed``, ``min_length``, no
    ``return_num_*_tokens``), so a runner configured with the wrong names sees what a real server
    does: the unknown key silently becomes an ignored request parameter.
    """
    inputs = [
        _t("text_input", "BYTES", 1, optional=False),
        _t("max_tokens", "INT32", 1, optional=False),
        _t("num_return_sequences", "INT32", 1),
        _t("bad_words", "BYTES", -1),
        _t("stop_words", "BYTES", -1),
        _t("exclude_input_in_output", "BOOL", 1),
        _t("end_id", "INT32", 1),
        _t("pad_id", "INT32", 1),
        _t("top_k", "INT32", 1),
        _t("top_p", "FP32", 1),
        _t("temperature", "FP32", 1),
        _t("length_penalty", "FP32", 1),
        _t("repetition_penalty", "FP32", 1),
        _t("min_length" if legacy else "min_tokens", "INT32", 1),
        _t("presence_penalty", "FP32", 1),
        _t("frequency_penalty", "FP32", 1),
        _t("random_seed" if legacy else "seed", "UINT64", 1),
        _t("return_log_probs", "BOOL", 1),
        _t("return_context_logits", "BOOL", 1),
        _t("return_generation_logits", "BOOL", 1),
        _t("beam_width", "INT32", 1),
        _t("stream", "BOOL", 1),
    ]
    outputs = [
        _t("text_output", "BYTES", -1),
        _t("cum_log_probs", "FP32", -1),
        _t("output_log_probs", "FP32", -1, -1),
        _t("context_logits", "FP32", -1, -1),
        _t("generation_logits", "FP32", -1, -1, -1),
        _t("batch_index", "INT32", 1),
        _t("sequence_index", "INT32", 1),
    ]
    if not legacy:
        inputs += [_t("return_num_input_tokens", "BOOL", 1),
                   _t("return_num_output_tokens", "BOOL", 1)]
        outputs += [_t("num_input_tokens", "INT32", 1), _t("num_output_tokens", "INT32", 1)]
    return ModelSpec(
        name=name, backend="tensorrtllm", decoupled=decoupled, max_batch_size=64,
        platform="ensemble", backend_name="", inputs=tuple(inputs), outputs=tuple(outputs),
        seed_name="random_seed" if legacy else "seed",
    )


def generic_model(name: str, *, decoupled: bool = False) -> ModelSpec:
    """A plain Python-backend model: ``text_input`` in, ``text_output`` out, settings as request
    parameters (``max_tokens``, ``seed``, ``stream``). Stop sequences need a list, which
    Triton accepts only for an input name, so the model declares an optional ``stop_words``."""
    return ModelSpec(
        name=name, backend="generic", decoupled=decoupled, max_batch_size=0, platform="python",
        backend_name="python",
        inputs=(_t("text_input", "BYTES", 1, optional=False), _t("stop_words", "BYTES", -1)),
        outputs=(_t("text_output", "BYTES", -1),),
    )


def parse_model_spec(spec: str, default_backend: str = "generic", *,
                     trtllm_legacy: bool = False) -> ModelSpec:
    """``NAME[:BACKEND[:decoupled|coupled]]`` -> a model.

    Defaults: vLLM is always decoupled (as the real backend forces), TensorRT-LLM decoupled
    (needed for streaming), generic coupled (so KServe ``/infer`` works on it).
    """
    name, _, rest = spec.partition(":")
    backend, _, policy = rest.partition(":")
    backend = backend or default_backend
    if not name:
        raise ModelSpecError(f"model spec {spec!r}: empty model name")
    if backend not in BACKENDS:
        raise ModelSpecError(f"model spec {spec!r}: backend must be one of {', '.join(BACKENDS)}")
    if policy not in ("", "decoupled", "coupled"):
        raise ModelSpecError(f"model spec {spec!r}: policy must be 'decoupled' or 'coupled'")
    if backend == "vllm":
        if policy == "coupled":
            raise ModelSpecError(f"model spec {spec!r}: the vLLM backend is always decoupled")
        return vllm_model(name)
    if backend == "tensorrtllm":
        return tensorrtllm_model(name, decoupled=policy != "coupled", legacy=trtllm_legacy)
    return generic_model(name, decoupled=policy == "decoupled")


def model_metadata(model: ModelSpec) -> dict[str, object]:
    """``GET /v2/models/{m}``: the KServe v2 model metadata object."""
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": model.full_dims(t)}
                   for t in model.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": model.full_dims(t)}
                    for t in model.outputs],
    }


def model_config(model: ModelSpec) -> dict[str, object]:
    """``GET /v2/models/{m}/config``: the model configuration as Triton renders it in JSON."""
    return {
        "name": model.name,
        "platform": model.platform,
        "backend": model.backend_name,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": model.max_batch_size,
        "input": [{"name": t.name, "data_type": _CONFIG_TYPES[t.datatype],
                   "dims": list(t.dims), "optional": t.optional} for t in model.inputs],
        "output": [{"name": t.name, "data_type": _CONFIG_TYPES[t.datatype],
                    "dims": list(t.dims)} for t in model.outputs],
        "model_transaction_policy": {"decoupled": model.decoupled},
    }
