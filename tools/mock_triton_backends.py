"""How each stand-in backend turns one request into its list of responses.

A response is what one ``response_sender.send`` carries: output name -> flat tensor data. A
non-streaming request gets one response; a streaming request on a decoupled model gets one per
generated token, holding only the new text (a delta), as vLLM and TensorRT-LLM send them. The
rules (prompt echo, stop strings, finish reasons, counts) follow facts sheet sections 2 and 3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union

from .mock_triton_models import ModelSpec
from .mock_triton_text import Completion, complete, count_tokens

Scalar = Union[str, int, float, bool]
ModelResponse = dict[str, list[Any]]


class TritonError(Exception):
    """A Triton error: ``{"error": message}`` with the HTTP status Triton maps its code to.

    ``from_model`` marks errors the model sent as its first response (not a rejected request):
    over generate_stream those arrive as an SSE ``data: {"error": ...}`` event with this status.
    """

    def __init__(self, message: str, status: int = 400, *, from_model: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.from_model = from_model


@dataclass
class ModelRequest:
    """A request as the model sees it: input tensors (flat data) and request parameters."""

    inputs: dict[str, list[Any]] = field(default_factory=dict)
    parameters: dict[str, Scalar] = field(default_factory=dict)
    request_id: str | None = None


def execute(model: ModelSpec, request: ModelRequest) -> list[ModelResponse]:
    if model.backend == "vllm":
        return _vllm(model, request)
    if model.backend == "tensorrtllm":
        return _tensorrtllm(model, request)
    return _generic(model, request)


def _model_error(message: str, status: int = 500) -> TritonError:
    return TritonError(message, status, from_model=True)


def _first(request: ModelRequest, name: str, default: Any = None) -> Any:
    values = request.inputs.get(name)
    return values[0] if values else default


# --- vLLM -------------------------------------------------------------------------------------

# The python backend's TritonError defaults to INTERNAL (500). When SamplingParams cannot be built
# (unknown key, bad value), TritonSamplingParams.from_dict logs and returns None and the next line
# fails on None: this is the message the real backend sends.
_VLLM_BAD_SAMPLING = "Error generating stream: 'NoneType' object has no attribute 'lora_name'"

_VLLM_INT = {"n", "best_of", "seed", "top_k", "max_tokens", "min_tokens", "logprobs",
             "prompt_logprobs", "truncate_prompt_tokens"}
_VLLM_FLOAT = {"presence_penalty", "frequency_penalty", "repetition_penalty", "temperature",
               "top_p", "min_p"}
_VLLM_BOOL = {"ignore_eos", "skip_special_tokens", "spaces_between_special_tokens",
              "include_stop_str_in_output", "detokenize"}
_VLLM_OTHER = {"stop", "stop_token_ids", "bad_words", "logit_bias", "allowed_token_ids",
               "structured_outputs", "guided_decoding", "extra_args", "output_kind", "lora_name"}
_VLLM_MAX_N = 16


@dataclass(frozen=True)
class _Sampling:
    n: int = 1
    max_tokens: int = 16
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int = 0
    ignore_eos: bool = False
    include_stop: bool = False


def _vllm_sampling(raw: dict[str, Any]) -> _Sampling:
    """What ``TritonSamplingParams.from_dict`` + ``SamplingParams.__post_init__`` accept."""
    values = {k: v for k, v in raw.items() if v is not None}
    try:
        for key, value in values.items():
            if key in _VLLM_INT:
                values[key] = int(value)
            elif key in _VLLM_FLOAT:
                values[key] = float(value)
            elif key in _VLLM_BOOL:
                values[key] = bool(value)
            elif key not in _VLLM_OTHER:
                raise ValueError(key)
        stop = values.get("stop", ())
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        if not all(isinstance(s, str) for s in stops):
            raise ValueError("stop")
        sampling = _Sampling(
            n=values.get("n", 1), max_tokens=values.get("max_tokens", 16),
            seed=values.get("seed"), stop=stops, min_tokens=values.get("min_tokens", 0),
            ignore_eos=values.get("ignore_eos", False),
            include_stop=values.get("include_stop_str_in_output", False),
        )
        temperature = values.get("temperature", 1.0)
        top_p = values.get("top_p", 1.0)
    except (TypeError, ValueError):
        raise _model_error(_VLLM_BAD_SAMPLING) from None
    if (not 1 <= sampling.n <= _VLLM_MAX_N or sampling.max_tokens < 1 or temperature < 0
            or not 0 < top_p <= 1 or sampling.min_tokens < 0):
        raise _model_error(_VLLM_BAD_SAMPLING)
    return sampling


def _vllm(model: ModelSpec, request: ModelRequest) -> list[ModelResponse]:
    prompt: str = _first(request, "text_input")
    stream = bool(_first(request, "stream", False))
    exclude = _first(request, "exclude_input_in_output")
    prepend = (not exclude) if exclude is not None else not stream
    if prepend and stream:
        raise _model_error(
            "Error generating stream: When streaming, `exclude_input_in_output` = False is "
            "not allowed.")
    if "sampling_parameters" in request.inputs:
        try:
            raw = json.loads(_first(request, "sampling_parameters"))
        except ValueError:
            raise _model_error(_VLLM_BAD_SAMPLING) from None
        if not isinstance(raw, dict):
            raise _model_error(_VLLM_BAD_SAMPLING)
    else:
        # Without the tensor, every request parameter is a sampling field (``id`` included).
        raw = dict(request.parameters)
    sampling = _vllm_sampling(raw)
    choices = [
        complete(prompt, max_tokens=sampling.max_tokens, stop=sampling.stop, seed=sampling.seed,
                 choice=i, include_stop=sampling.include_stop, min_tokens=sampling.min_tokens,
                 ignore_eos=sampling.ignore_eos)
        for i in range(sampling.n)
    ]
    wants = {name: bool(_first(request, name, False)) for name in (
        "return_finish_reason", "return_cumulative_logprob", "return_logprobs",
        "return_num_input_tokens", "return_num_output_tokens")}
    prompt_tokens = count_tokens(prompt)

    def response(texts: list[str], reasons: list[str], counts: list[int]) -> ModelResponse:
        out: ModelResponse = {"text_output": texts}
        if wants["return_finish_reason"]:
            out["finish_reason"] = reasons
        if wants["return_cumulative_logprob"]:
            out["cumulative_logprob"] = [0.0] * len(texts)
        if wants["return_logprobs"]:
            out["logprobs"] = ["null"] * len(texts)
        if wants["return_num_input_tokens"]:
            out["num_input_tokens"] = [prompt_tokens]
        if wants["return_num_output_tokens"]:
            out["num_output_tokens"] = counts
        return out

    if not stream:
        prefix = prompt if prepend else ""
        return [response([prefix + c.text for c in choices], [c.finish_reason for c in choices],
                         [c.tokens for c in choices])]
    steps = max(c.tokens for c in choices)
    return [
        response(
            [c.pieces[step] if step < c.tokens else "" for c in choices],
            [c.finish_reason if step >= c.tokens - 1 else "None" for c in choices],
            [1 if step < c.tokens else 0 for c in choices],
        )
        for step in range(steps)
    ]


# --- TensorRT-LLM ensemble ---------------------------------------------------------------------


def _tensorrtllm(model: ModelSpec, request: ModelRequest) -> list[ModelResponse]:
    prompt: str = _first(request, "text_input")
    max_tokens: int = _first(request, "max_tokens")
    stream = bool(_first(request, "stream", False))
    if stream and not model.decoupled:
        raise _model_error("Streaming is only supported in decoupled mode.")
    if max_tokens < 1:
        raise _model_error(f"max_tokens must be a positive number, got {max_tokens}", 400)
    for name in ("num_return_sequences", "beam_width"):
        if _first(request, name, 1) != 1:
            raise _model_error(f"mock-triton supports only {name} = 1", 400)
    exclude = bool(_first(request, "exclude_input_in_output", False))
    min_name = "min_length" if model.seed_name == "random_seed" else "min_tokens"
    result = complete(
        prompt, max_tokens=max_tokens,
        stop=tuple(request.inputs.get("stop_words", ())),
        seed=_first(request, model.seed_name), min_tokens=_first(request, min_name, 0),
        stop_at_token_end=True, include_stop=True,
    )
    want_in = bool(_first(request, "return_num_input_tokens", False))
    want_out = bool(_first(request, "return_num_output_tokens", False))
    prompt_tokens = count_tokens(prompt)

    def response(text: str, tokens: int) -> ModelResponse:
        out: ModelResponse = {
            "text_output": [text],
            "cum_log_probs": [0.0],
            "output_log_probs": [0.0] * tokens,
            "context_logits": [0.0],
            "generation_logits": [0.0],
            "batch_index": [0],
            "sequence_index": [0],
        }
        if want_in:
            out["num_input_tokens"] = [prompt_tokens]
        if want_out:
            out["num_output_tokens"] = [tokens]
        return out

    if not stream:
        return [response((prompt if not exclude else "") + result.text, result.tokens)]
    return [response(piece, 1) for piece in result.pieces]


# --- generic Python-backend model --------------------------------------------------------------


def _generic(model: ModelSpec, request: ModelRequest) -> list[ModelResponse]:
    prompt: str = _first(request, "text_input")
    params = request.parameters
    max_tokens = params.get("max_tokens", 16)
    seed = params.get("seed")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _model_error("parameter 'max_tokens' must be a positive integer", 400)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _model_error("parameter 'seed' must be an integer", 400)
    result: Completion = complete(prompt, max_tokens=max_tokens, seed=seed,
                                  stop=tuple(request.inputs.get("stop_words", ())))
    if model.decoupled and params.get("stream") is True:
        return [{"text_output": [piece]} for piece in result.pieces]
    return [{"text_output": [result.text]}]
