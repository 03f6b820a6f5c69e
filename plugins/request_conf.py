"""The openai-to-triton route conf: strict validation, defaults, and everything precomputed.

``parse_request_conf`` runs once per conf (at PrepareConf). It refuses unknown keys and wrong
types with a message naming the key, checks the keys against each other, compiles the template
and the special-token pattern, and precomputes the upstream paths and the ``/v1/models``
answers, so that a request does no per-conf work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import msgspec
import orjson

from apisix_openai_triton.runner import ConfError

from .chat_request import Message, Policy
from .errors import OpenAIError
from .sanitize import Sanitizer, scan_template_markers
from .templates import TEMPLATE_NAMES, Template, build_template
from .triton_request import BodyOptions, model_base_path
from .usage import load_tokenizer

if TYPE_CHECKING:  # imported by usage.load_tokenizer when a conf names a tokenizer: ~8 MB of RSS
    from tokenizers import Tokenizer

FRAME_LIMIT = 16 * 1024 * 1024 - 1
MAX_BODY_CEILING = 15 * 1024 * 1024
"""Hard ceiling for ``max_body_bytes`` and for the rewritten body: a body must fit in one
protocol frame (16 MiB including the FlatBuffer around it) both ways."""

_NAME_PATTERN = r"^[^/\\%?#\s\x00-\x1f\x7f]+$"
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=_NAME_PATTERN)]
OpenAIName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class InferConf(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """KServe v2 ``infer`` tensor shapes."""

    batch_dim: bool = True
    """Tensors get a leading batch dimension ([1,1] for a scalar): right for a model with
    ``max_batch_size > 0`` such as the TensorRT-LLM ensemble; false gives [1]."""


class RawConf(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """The conf as the Admin API route gives it (see README, "plugin conf reference")."""

    model: Optional[ModelName] = None
    models: Optional[dict[OpenAIName, ModelName]] = None
    default_model: Optional[OpenAIName] = None
    model_version: Optional[Positive] = None
    served_model_name: Optional[OpenAIName] = None
    owned_by: str = "triton"
    template: Optional[Literal["llama3", "llama3.1", "mistral", "mistral-v1", "mistral-v3",
                               "mistral-tekken", "chatml", "gemma"]] = None
    mistral_variant: Optional[Literal["v1", "v3", "tekken"]] = None
    chat_template: Optional[Annotated[str, msgspec.Meta(min_length=1, max_length=262144)]] = None
    bos_token: Optional[str] = None
    eos_token: Optional[str] = None
    special_tokens_list: list[Annotated[str, msgspec.Meta(min_length=2, max_length=256)]] = []
    date_string: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "26 Jul 2024"
    backend: Literal["vllm", "tensorrtllm", "generic"] = "generic"
    api: Literal["generate", "infer"] = "generate"
    bos: bool = False
    special_tokens: Literal["neutralize", "reject"] = "neutralize"
    seed_name: Literal["seed", "random_seed"] = "seed"
    always_stop: Optional[list[Annotated[str, msgspec.Meta(min_length=1)]]] = None
    return_num_tokens: bool = True
    completions: bool = True
    max_tokens_default: Positive = 512
    max_tokens_cap: Positive = 4096
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=MAX_BODY_CEILING)] = 1024 * 1024
    max_messages: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 512
    max_prompt_chars: Annotated[int, msgspec.Meta(ge=1, le=MAX_BODY_CEILING)] = 1_000_000
    render_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 200
    infer: InferConf = InferConf()
    tokenizer: Optional[Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]] = None
    """Path to a Hugging Face ``tokenizer.json``: counts the prompt's tokens for ``usage``
    when the backend is not asked for counts (generic, or tensorrtllm with
    ``return_num_tokens: false``)."""


CONF_SCHEMA: dict[str, Any] = msgspec.json.schema(RawConf)
"""JSON Schema of the conf, for the ``plugins`` listing."""

_decoder = msgspec.json.Decoder(RawConf)


@dataclass(frozen=True, slots=True)
class Target:
    """One servable model: the name answers echo, and the upstream path per Triton API."""

    served: str
    paths: dict[str, str]


@dataclass(frozen=True, slots=True)
class RequestConf:
    """A parsed route conf: what a request needs, and nothing to compute again."""

    raw: RawConf
    policy: Policy
    template: Template
    body: BodyOptions
    targets: dict[str, Target]
    """OpenAI model name -> target (empty on a single-model route)."""
    single: Optional[Target]
    default: Optional[Target]
    models_body: bytes
    model_bodies: dict[str, bytes]
    prompt_tokenizer: Optional[Tokenizer] = None
    """The conf's ``tokenizer`` when prompts must be counted here; None when the backend
    returns the count itself (then counting would only cost time)."""

    def resolve(self, requested: Optional[str]) -> Target:
        """The target for the request's ``model``; 404 ``model_not_found`` if it is unknown."""
        if self.single is not None:
            return self.single
        if requested is None:
            if self.default is None:
                raise OpenAIError(400, "You must provide a model parameter.", param="model",
                                  code="missing_required_parameter")
            return self.default
        target = self.targets.get(requested)
        if target is None:
            raise model_not_found(requested)
        return target


def model_not_found(name: str) -> OpenAIError:
    return OpenAIError(404, f"The model '{name[:256]}' does not exist or you do not have access "
                            "to it.", param="model", code="model_not_found")


def _target(served: str, triton_model: str, version: Optional[int]) -> Target:
    base = model_base_path(triton_model, version)
    return Target(served, {api: f"{base}/{api}" for api in ("generate", "generate_stream", "infer")})


def _check(raw: RawConf) -> None:
    def fail(message: str) -> None:
        raise ConfError(f"openai-to-triton conf: {message}")

    if (raw.model is None) == (raw.models is None):
        fail("set `model` (one Triton model) or `models` (OpenAI name -> Triton model), "
             "exactly one of them")
    if raw.models is not None and not raw.models:
        fail("`models` must name at least one model")
    if raw.default_model is not None and (raw.models is None or raw.default_model not in raw.models):
        fail("`default_model` must be one of the names in `models`")
    if raw.served_model_name is not None and raw.model is None:
        fail("`served_model_name` goes with `model`; with `models` the map keys are served")
    if raw.template is not None and raw.chat_template is not None:
        fail("set either `template` or `chat_template`, not both")
    if raw.mistral_variant is not None and raw.template != "mistral":
        fail("`mistral_variant` goes with `template: mistral`")
    if raw.chat_template is None and (raw.bos_token is not None or raw.eos_token is not None):
        fail("`bos_token` / `eos_token` go with `chat_template`")
    if raw.max_tokens_default > raw.max_tokens_cap:
        fail("`max_tokens_default` must not exceed `max_tokens_cap`")
    if raw.backend == "vllm" and raw.api == "infer":
        fail("`api: infer` cannot reach the vllm backend: its models are decoupled and "
             "Triton's HTTP infer endpoint refuses decoupled models; use `api: generate`")
    if raw.backend == "vllm" and raw.seed_name != "seed":
        fail("`seed_name` applies to the tensorrtllm and generic backends only")


def _models_answers(raw: RawConf, names: list[str]) -> tuple[bytes, dict[str, bytes]]:
    created = int(time.time())
    objects = {n: {"id": n, "object": "model", "created": created, "owned_by": raw.owned_by}
               for n in names}
    listing = orjson.dumps({"object": "list", "data": list(objects.values())})
    return listing, {n: orjson.dumps(o) for n, o in objects.items()}


def parse_request_conf(text: str) -> RequestConf:
    """Validate and compile a conf string; ``ConfError`` names the offending key."""
    try:
        raw = _decoder.decode(text.strip() or "{}")
    except msgspec.ValidationError as exc:
        raise ConfError(f"openai-to-triton conf: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfError(f"openai-to-triton conf is not valid JSON: {exc}") from None
    _check(raw)

    name = raw.template or "llama3"
    markers = set(raw.special_tokens_list)
    if raw.chat_template is not None:
        markers |= scan_template_markers(raw.chat_template)
        markers |= {t for t in (raw.bos_token, raw.eos_token) if t}
    try:
        template = build_template(
            name, mistral_variant=raw.mistral_variant or "v3", chat_template=raw.chat_template,
            bos_token=raw.bos_token or "", eos_token=raw.eos_token or "",
            date_string=raw.date_string, max_chars=raw.max_prompt_chars,
            timeout_ms=raw.render_timeout_ms)
        # A template that cannot render the simplest conversation is refused now, not per request.
        template.render((Message("user", "Hello"),), None, raw.bos)
    except OpenAIError as exc:
        raise ConfError(f"openai-to-triton conf: `chat_template` {exc.message}") from None
    except Exception as exc:  # Jinja syntax errors and the like
        raise ConfError(f"openai-to-triton conf: `chat_template` does not compile: {exc}") from None

    policy = Policy(
        sanitizer=Sanitizer(raw.special_tokens, markers),
        max_messages=raw.max_messages,
        max_tokens_default=raw.max_tokens_default,
        max_tokens_cap=raw.max_tokens_cap,
        max_n=128 if raw.backend == "vllm" else 1,
        tools=template.tools,
        tool_role=template.tool_role,
        backend=raw.backend,
        template=template.name,
    )
    # TensorRT-LLM stops on the tokenizer's EOS, which for Llama 3 Instruct is not <|eot_id|>;
    # a generic model may have no stop_words input at all, so it gets none unless asked.
    if raw.always_stop is not None:
        always_stop = tuple(raw.always_stop)
    else:
        always_stop = template.end_markers if raw.backend == "tensorrtllm" else ()
    body = BodyOptions(raw.backend, raw.seed_name, always_stop, raw.return_num_tokens,
                       raw.infer.batch_dim)
    if raw.model is not None:
        served = raw.served_model_name or raw.model
        single: Optional[Target] = _target(served, raw.model, raw.model_version)
        targets: dict[str, Target] = {}
        names = [served]
    else:
        assert raw.models is not None
        single = None
        targets = {k: _target(k, v, raw.model_version) for k, v in raw.models.items()}
        names = list(raw.models)
    listing, per_model = _models_answers(raw, names)
    return RequestConf(
        raw=raw, policy=policy, template=template, body=body, targets=targets, single=single,
        default=targets.get(raw.default_model) if raw.default_model else None,
        models_body=listing, model_bodies=per_model, prompt_tokenizer=_prompt_tokenizer(raw),
    )


def _prompt_tokenizer(raw: RawConf) -> Optional[Tokenizer]:
    """The tokenizer that counts prompts, loaded now (and checked even when it is not needed)."""
    if raw.tokenizer is None:
        return None
    try:
        tokenizer = load_tokenizer(raw.tokenizer)
    except ValueError as exc:
        raise ConfError(f"openai-to-triton conf: `tokenizer`: {exc}") from None
    backend_counts = raw.backend == "vllm" or (raw.backend == "tensorrtllm" and raw.return_num_tokens)
    return None if backend_counts else tokenizer
