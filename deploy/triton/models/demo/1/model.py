"""``demo``: a tiny deterministic language model for Triton's Python backend.

The compose demo needs a real Triton server on a laptop with no GPU and no weights, and the
whole path (client -> APISIX -> runner -> Triton -> runner -> client) should carry exactly the
bytes production carries. So this model speaks the generate contract of Triton's vLLM backend,
which is the ``backend: vllm`` profile of the openai-to-triton plugin:

- inputs: ``text_input``; ``stream``; ``sampling_parameters`` (a JSON string of vLLM
  ``SamplingParams`` fields; without it the request parameters are read, as vLLM does);
  ``exclude_input_in_output`` (absent: the prompt is prepended when not streaming, like vLLM);
  ``return_finish_reason``, ``return_num_input_tokens``, ``return_num_output_tokens``.
- outputs: ``text_output`` (one element per choice; the new text only when streaming),
  ``finish_reason`` (``"None"`` until a choice has ended, then ``"stop"`` or ``"length"``),
  ``num_input_tokens``, ``num_output_tokens`` (tokens generated in this response).
- decoupled: one response when not streaming, one per token when streaming; the last one
  carries the FINAL flag.

What it generates: a pure function of the prompt, the choice index and ``seed``; words drawn
from a fixed vocabulary (some non-ASCII, so unicode is exercised end to end) by SHA-256, one
token per word. Each choice has a natural length of 6 to 31 words; it then emits an end-of-text
token (counted, adds no text) and finishes ``stop``; ``max_tokens`` cuts it short with ``length``.
A stop string ends the text before its first occurrence (``stop``, the stop string removed,
as vLLM does); the streamed deltas always add up to the non-streamed text. Prompt tokens are
counted as whitespace-separated words.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import triton_python_backend_utils as pb_utils

VOCABULARY: tuple[str, ...] = (
    "amber", "brisk", "cedar", "delta", "ember", "fjord", "glade", "harbor", "island", "jade",
    "kelp", "lumen", "meadow", "nectar", "orbit", "pixel", "quartz", "river", "sable", "tundra",
    "umber", "velvet", "willow", "xenon", "yonder", "zephyr", "lantern", "granite", "comet",
    "saffron", "café", "naïve", "façade", "jalapeño", "smörgåsbord", "Zürich", "über", "東京",
    "Ελλάδα", "мир", "🌊", "señal",
)
DEFAULT_MAX_TOKENS = 16  # vLLM's SamplingParams default
MAX_TOKENS_LIMIT = 32768
MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 16
NATURAL_LENGTH_MIN = 6
NATURAL_LENGTH_SPAN = 26
END_OF_TEXT = ""  # the end-of-text token: counted as a generated token, decodes to nothing

# vLLM refuses a SamplingParams field it does not know; so does this model, so a request body
# that would fail on a real vLLM backend fails here too. Accepted fields the demo has no use
# for (temperature, top_p, ...) are ignored.
SAMPLING_FIELDS = frozenset({
    "n", "best_of", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "bad_words",
    "ignore_eos", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs", "detokenize",
    "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "truncate_prompt_tokens", "logit_bias", "allowed_token_ids", "structured_outputs",
    "guided_decoding", "extra_args", "lora_name",
})
STREAM_ECHO_ERROR = "When streaming, `exclude_input_in_output` = False is not allowed."


@dataclass(frozen=True)
class Sampling:
    """The sampling fields that change what the demo model generates."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    min_tokens: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    seed: Optional[int] = None


@dataclass(frozen=True)
class Choice:
    """One generated choice: the text each generated token adds, and why generation ended."""

    pieces: tuple[str, ...]
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True)
class Call:
    """One request's inputs, read and checked before anything is sent back."""

    prompt: str
    stream: bool
    echo_prompt: bool
    sampling: Sampling
    want_finish_reason: bool
    want_input_tokens: bool
    want_output_tokens: bool


def _int_field(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"sampling parameter '{name}' must be an integer")
    if not low <= value <= high:
        raise ValueError(f"sampling parameter '{name}' must be between {low} and {high}, got {value}")
    return value


def _stop_field(params: dict[str, Any]) -> tuple[str, ...]:
    value = params.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ValueError("sampling parameter 'stop' must be a non-empty string or a list of them")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ValueError(f"sampling parameter 'stop' takes at most {MAX_STOP_SEQUENCES} sequences")
    return tuple(stops)


def parse_sampling(raw: str) -> Sampling:
    """Read a JSON object of vLLM SamplingParams fields (``sampling_parameters``)."""
    try:
        params = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ValueError(f"sampling parameters are not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError("sampling parameters must be a JSON object")
    unknown = sorted(set(params) - SAMPLING_FIELDS)
    if unknown:
        raise ValueError(f"unknown sampling parameters: {', '.join(unknown)}")
    max_tokens = _int_field(params, "max_tokens", DEFAULT_MAX_TOKENS, 1, MAX_TOKENS_LIMIT)
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("sampling parameter 'seed' must be an integer")
    ignore_eos = params.get("ignore_eos") or False
    if not isinstance(ignore_eos, bool):
        raise ValueError("sampling parameter 'ignore_eos' must be a boolean")
    return Sampling(
        max_tokens=max_tokens,
        min_tokens=_int_field(params, "min_tokens", 0, 0, max_tokens),
        n=_int_field(params, "n", 1, 1, MAX_CHOICES),
        stop=_stop_field(params),
        ignore_eos=ignore_eos,
        seed=seed,
    )


def count_prompt_tokens(prompt: str) -> int:
    return len(prompt.split())


def _key(prompt: str, index: int, seed: Optional[int]) -> bytes:
    return f"{'' if seed is None else seed}\x00{index}\x00".encode() + prompt.encode("utf-8")


def _natural_length(key: bytes) -> int:
    return NATURAL_LENGTH_MIN + hashlib.sha256(b"length\x00" + key).digest()[0] % NATURAL_LENGTH_SPAN


def _words(key: bytes) -> Iterator[str]:
    block = 0
    while True:
        digest = hashlib.sha256(key + block.to_bytes(8, "big")).digest()
        for i in range(0, len(digest), 2):
            yield VOCABULARY[int.from_bytes(digest[i:i + 2], "big") % len(VOCABULARY)]
        block += 1


def _cut_at_stop(tokens: list[str], stops: Sequence[str]) -> tuple[list[str], str, bool]:
    """Join tokens until a stop string completes; return (tokens used, text, stopped)."""
    longest = max((len(s) for s in stops), default=0)
    text = ""
    for used, token in enumerate(tokens, start=1):
        start = max(0, len(text) - longest + 1)
        text += token
        hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
        if hits:
            return tokens[:used], text[:min(hits)], True
    return tokens, text, False


def generate(prompt: str, index: int, sampling: Sampling) -> Choice:
    """The deterministic choice ``index`` for ``prompt``, split into per-token pieces."""
    key = _key(prompt, index, sampling.seed)
    natural = max(_natural_length(key), sampling.min_tokens)
    ends_itself = not sampling.ignore_eos and natural < sampling.max_tokens
    words = _words(key)
    tokens = [next(words) if k == 0 else " " + next(words)
              for k in range(natural if ends_itself else sampling.max_tokens)]
    if ends_itself:
        tokens.append(END_OF_TEXT)
    tokens, text, stopped = _cut_at_stop(tokens, sampling.stop)
    finish_reason = "stop" if ends_itself or stopped else "length"
    # Each token's piece is its share of the final text, so the pieces of a choice cut by a
    # stop string still add up to that text (the token that completes the stop adds only
    # what precedes it).
    pieces: list[str] = []
    emitted = 0
    for k, token in enumerate(tokens):
        end = len(text) if k == len(tokens) - 1 else min(len(text), emitted + len(token))
        pieces.append(text[emitted:end])
        emitted = end
    return Choice(tuple(pieces), finish_reason)


def _read(request: Any, name: str) -> Optional[Any]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"'{name}' is not valid UTF-8") from None


def _flag(request: Any, name: str) -> Optional[bool]:
    values = _read(request, name)
    return None if values is None or values.size == 0 else bool(values[0])


def read_call(request: Any) -> Call:
    """Read one request's inputs the way the vLLM backend does; ValueError when invalid."""
    prompts = _read(request, "text_input")
    if prompts is None or prompts.size == 0:
        raise ValueError("input 'text_input' is required")
    stream = bool(_flag(request, "stream"))
    exclude = _flag(request, "exclude_input_in_output")
    echo_prompt = not stream if exclude is None else not exclude
    if echo_prompt and stream:
        raise ValueError(STREAM_ECHO_ERROR)
    raw_sampling = _read(request, "sampling_parameters")
    if raw_sampling is not None and raw_sampling.size:
        sampling_json = _text(raw_sampling[0], "sampling_parameters")
    else:
        sampling_json = request.parameters()
    return Call(
        prompt=_text(prompts[0], "text_input"),
        stream=stream,
        echo_prompt=echo_prompt,
        sampling=parse_sampling(sampling_json),
        want_finish_reason=bool(_flag(request, "return_finish_reason")),
        want_input_tokens=bool(_flag(request, "return_num_input_tokens")),
        want_output_tokens=bool(_flag(request, "return_num_output_tokens")),
    )


def _strings(values: Sequence[str]) -> Any:
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_)


def _response(call: Call, texts: Sequence[str], reasons: Sequence[str],
              output_tokens: Sequence[int]) -> Any:
    outputs = [pb_utils.Tensor("text_output", _strings(texts))]
    if call.want_finish_reason:
        outputs.append(pb_utils.Tensor("finish_reason", _strings(reasons)))
    if call.want_input_tokens:
        count = count_prompt_tokens(call.prompt)
        outputs.append(pb_utils.Tensor("num_input_tokens", np.array([count], dtype=np.uint32)))
    if call.want_output_tokens:
        outputs.append(pb_utils.Tensor("num_output_tokens", np.array(output_tokens, dtype=np.uint32)))
    return pb_utils.InferenceResponse(output_tensors=outputs)


def respond(call: Call, request: Any, sender: Any) -> None:
    """Send the whole answer (non-streaming) or one response per token (streaming)."""
    final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    choices = [generate(call.prompt, i, call.sampling) for i in range(call.sampling.n)]
    if not call.stream:
        prefix = call.prompt if call.echo_prompt else ""
        sender.send(_response(call, [prefix + c.text for c in choices],
                              [c.finish_reason for c in choices],
                              [len(c.pieces) for c in choices]), flags=final)
        return
    steps = max(len(c.pieces) for c in choices)
    for step in range(steps):
        if request.is_cancelled():
            error = pb_utils.TritonError("Request was cancelled", pb_utils.TritonError.CANCELLED)
            sender.send(pb_utils.InferenceResponse(error=error), flags=final)
            return
        texts = [c.pieces[step] if step < len(c.pieces) else "" for c in choices]
        reasons = [c.finish_reason if step >= len(c.pieces) - 1 else "None" for c in choices]
        counts = [1 if step < len(c.pieces) else 0 for c in choices]
        sender.send(_response(call, texts, reasons, counts), flags=final if step == steps - 1 else 0)


class TritonPythonModel:
    """The Python backend's entry point (Triton instantiates it by this exact name)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                "the demo model streams: its config.pbtxt needs model_transaction_policy { decoupled: true }")

    def execute(self, requests: Sequence[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                call = read_call(request)
            except ValueError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                sender.send(pb_utils.InferenceResponse(error=error),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            respond(call, request, sender)
