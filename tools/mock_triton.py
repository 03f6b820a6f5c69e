"""``apisix-openai-triton mock-triton``: a stand-in for NVIDIA Triton's HTTP API.

CI and laptops have no Triton and no GPU, yet the plugins must be tested against Triton's real
formats: the generate extension (flat JSON, SSE without a terminator, errors inside a 200
stream), KServe v2 infer, and the per-backend input names and outputs of vLLM and TensorRT-LLM.
This server speaks those formats with a deterministic model (see ``mock_triton_text``), so the
`openai` SDK can be driven end to end through the gateway and every answer is predictable.

Test-only fault injection: the request header ``x-mock-fault`` (see ``FAULTS``) makes a model
request fail the way real deployments fail. Nothing here is meant to face real traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .mock_triton_backends import ModelRequest, ModelResponse, TritonError, execute
from .mock_triton_models import (
    BACKENDS,
    ModelSpec,
    ModelSpecError,
    model_config,
    model_metadata,
    parse_model_spec,
)
from .mock_triton_wire import error_body, generate_body, infer_body, parse_generate, parse_infer

__all__ = [
    "DEFAULT_MODELS", "FAULTS", "FAULT_HEADER", "FAIL_AFTER_HEADER", "DELAY_HEADER",
    "MockOptions", "make_app", "start_mock_triton", "add_commands", "main",
]

DEFAULT_MODELS: tuple[str, ...] = ("llama-3.1-8b-instruct", "mistral-7b-instruct")

FAULT_HEADER = "x-mock-fault"
"""Test-only request header: comma-separated fault names from ``FAULTS``."""
FAIL_AFTER_HEADER = "x-mock-fail-after"
"""With ``error-mid-stream``: how many events precede the error event (default 1)."""
DELAY_HEADER = "x-mock-delay-ms"
"""With ``slow``: how long to wait before answering (default ``MockOptions.slow_delay``)."""

FAULTS: dict[str, str] = {
    "error-mid-stream": "generate_stream: data: {\"error\": ...} after N events (status stays 200;"
                        " with N=0 the error is the first response: status 500)",
    "http-500": "answer 500 {\"error\": ...} (Triton INTERNAL)",
    "http-503": "answer 503 {\"error\": ...} (Triton UNAVAILABLE)",
    "http-429": "answer 429 {\"error\": ...} (a rate limiter in front of Triton)",
    "html": "answer 502 with an HTML page (a proxy in front of Triton)",
    "truncated": "cut the JSON body (or the last SSE event) in half, status 200",
    "slow": "wait before answering (x-mock-delay-ms, default --slow-ms)",
}

_STATUS_FAULTS = {"http-500": 500, "http-503": 503, "http-429": 429}
_HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
             b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
             b"</body>\r\n</html>\r\n")
_JSON = "application/json"
_SSE = "text/event-stream; charset=utf-8"


@dataclass(frozen=True)
class MockOptions:
    """Everything the stand-in can be told; CLI flags map one to one."""

    models: tuple[str, ...] = DEFAULT_MODELS
    """``NAME[:BACKEND[:decoupled|coupled]]`` specs; BACKEND defaults to ``backend``."""
    backend: str = "generic"
    trtllm_legacy: bool = False
    """TensorRT-LLM input names from before 2025-05: random_seed, min_length, no return_num_*."""
    fail_after: int | None = None
    """Every stream fails after this many events, as with ``x-mock-fault: error-mid-stream``."""
    fault: str | None = None
    """Faults applied to every model request that sends no ``x-mock-fault`` header."""
    token_delay: float = 0.0
    """Seconds between stream events, to make streaming visible in a demo."""
    slow_delay: float = 5.0
    max_input_size: int = 64 * 1024 * 1024
    """Triton's ``--http-max-input-size`` default."""


def build_models(options: MockOptions) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = {}
    for spec in options.models:
        model = parse_model_spec(spec, options.backend, trtllm_legacy=options.trtllm_legacy)
        if model.name in models:
            raise ModelSpecError(f"model {model.name!r} is listed twice")
        models[model.name] = model
    return models


_MODELS_KEY = web.AppKey("models", dict[str, ModelSpec])
_OPTIONS_KEY = web.AppKey("options", MockOptions)


def make_app(options: MockOptions | None = None) -> web.Application:
    """The aiohttp application; raises ValueError for invalid options (``ModelSpecError`` for
    models)."""
    options = options or MockOptions()
    if options.backend not in BACKENDS:
        raise ModelSpecError(f"backend must be one of {', '.join(BACKENDS)}")
    if options.fail_after is not None and options.fail_after < 0:
        raise ValueError("fail_after must not be negative")
    if options.fault:
        try:
            _parse_faults(options.fault)
        except TritonError as exc:
            raise ValueError(exc.message) from None
    app = web.Application(client_max_size=options.max_input_size)
    app[_MODELS_KEY] = build_models(options)
    app[_OPTIONS_KEY] = options
    actions = "{action:ready|config|generate|generate_stream|infer}"
    app.router.add_route("*", "/v2", _server_metadata)
    app.router.add_route("*", "/v2/health/{what:live|ready}", _health)
    app.router.add_route("*", "/v2/models/{model}", _model_metadata)
    app.router.add_route("*", "/v2/models/{model}/versions/{version}", _model_metadata)
    app.router.add_route("*", "/v2/models/{model}/" + actions, _model_action)
    app.router.add_route("*", "/v2/models/{model}/versions/{version}/" + actions, _model_action)
    return app


async def start_mock_triton(host: str = "127.0.0.1", port: int = 0,
                            **options: Any) -> tuple[web.AppRunner, int]:
    """Serve the stand-in on host:port (0 picks a free port). Stop it with ``runner.cleanup()``.

    ``options`` are ``MockOptions`` fields, e.g. ``models=("m:vllm",)``, ``fail_after=2``.
    """
    return await _start(host, port, MockOptions(**options))


async def _start(host: str, port: int, options: MockOptions) -> tuple[web.AppRunner, int]:
    # handler_cancellation: a client that gives up on a 'slow' answer must not hold shutdown.
    runner = web.AppRunner(make_app(options), handler_cancellation=True, shutdown_timeout=1.0,
                           access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


# --- handlers ---------------------------------------------------------------------------------


def _json(document: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type=_JSON)


def _error(message: str, status: int) -> web.Response:
    return web.Response(body=error_body(message), status=status, content_type=_JSON)


def _method_not_allowed(allowed: str) -> web.Response:
    return web.Response(status=405, headers={"Allow": allowed})


async def _server_metadata(request: web.Request) -> web.Response:
    if request.method != "GET":
        return _method_not_allowed("GET")
    return _json({"name": "triton", "version": "2.0.0-mock",
                  "extensions": ["classification", "model_configuration", "generate"]})


async def _health(request: web.Request) -> web.Response:
    if request.method != "GET":
        return _method_not_allowed("GET")
    return web.Response(status=200)


def _lookup(request: web.Request) -> ModelSpec:
    name = request.match_info["model"]
    model = request.app[_MODELS_KEY].get(name)
    version = request.match_info.get("version")
    if model is None:
        raise TritonError(f"Request for unknown model: '{name}' is not found", 404)
    if version is not None and version != model.version:
        raise TritonError(f"Request for unknown model: '{name}' version {version} is not found",
                          404)
    return model


async def _model_metadata(request: web.Request) -> web.Response:
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        return _json(model_metadata(_lookup(request)))
    except TritonError as exc:
        return _error(exc.message, exc.status)


async def _model_action(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    wanted = "GET" if action in ("ready", "config") else "POST"
    if request.method != wanted:
        return _method_not_allowed(wanted)
    try:
        model = _lookup(request)
        if action == "ready":
            return web.Response(status=200)
        if action == "config":
            return _json(model_config(model))
        return await _inference(request, model, action)
    except TritonError as exc:
        return _error(exc.message, exc.status)


def _parse_faults(value: str) -> set[str]:
    faults = {f.strip() for f in value.split(",") if f.strip()}
    unknown = faults - FAULTS.keys()
    if unknown:
        raise TritonError(f"mock-triton: unknown {FAULT_HEADER} value(s) "
                          f"{', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}")
    return faults


def _int_header(request: web.Request, name: str, default: int) -> int:
    raw = request.headers.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TritonError(f"mock-triton: header {name} must be an integer") from None
    if value < 0:
        raise TritonError(f"mock-triton: header {name} must not be negative")
    return value


async def _inference(request: web.Request, model: ModelSpec, api: str) -> web.StreamResponse:
    options = request.app[_OPTIONS_KEY]
    faults = _parse_faults(request.headers.get(FAULT_HEADER, options.fault or ""))
    for fault, status in _STATUS_FAULTS.items():
        if fault in faults:
            return _error(f"mock-triton: injected fault {fault}", status)
    if "html" in faults:
        return web.Response(body=_HTML_502, status=502, content_type="text/html")
    model_request, wanted_outputs = await _read_request(request, model, api, options)
    if "slow" in faults:
        await asyncio.sleep(
            _int_header(request, DELAY_HEADER, int(options.slow_delay * 1000)) / 1000)
    try:
        responses = execute(model, model_request)
    except TritonError as exc:
        if api == "generate_stream" and exc.from_model:
            return await _stream(request, model, None, [], 0.0, exc, faults)
        raise
    rid = model_request.request_id
    if api == "generate_stream":
        fail_after = options.fail_after
        if "error-mid-stream" in faults:
            fail_after = _int_header(request, FAIL_AFTER_HEADER, 1)
        injected = None
        if fail_after is not None:
            count = min(fail_after, len(responses))
            injected = TritonError(f"mock-triton: injected error after {count} responses", 500)
            responses = responses[:count]
        return await _stream(request, model, rid, responses, options.token_delay, injected,
                             faults)
    if len(responses) != 1:  # only a decoupled model can answer otherwise; /infer refused it
        raise TritonError("generate expects model to produce exactly 1 response, use generate "
                          "stream for model that generates various number of responses")
    if api == "infer":
        body = infer_body(model, rid, responses[0], wanted_outputs)
    else:
        body = generate_body(model, rid, responses[0])
    if "truncated" in faults:
        body = body[: len(body) // 2]
    return web.Response(body=body, status=200, content_type=_JSON)


async def _read_request(request: web.Request, model: ModelSpec, api: str,
                        options: MockOptions) -> tuple[ModelRequest, list[str] | None]:
    """Checks in Triton's order (policy, encoding, size), then the body for this API."""
    if api == "infer" and model.decoupled:
        raise TritonError("HTTP end point doesn't support models with decoupled transaction "
                          "policy", 501)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise TritonError("Unsupported content-encoding, only 'identity' is supported.")
    if api == "infer" and "Inference-Header-Content-Length" in request.headers:
        raise TritonError("mock-triton does not support the binary tensor data extension")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TritonError(f"Request JSON size of {request.content_length} bytes exceeds the "
                          f"maximum allowed input size of {options.max_input_size} bytes") from None
    if api == "infer":
        return parse_infer(body, model)
    return parse_generate(body, model), None


async def _stream(request: web.Request, model: ModelSpec, rid: str | None,
                  responses: list[ModelResponse], delay: float, error: TritonError | None,
                  faults: set[str]) -> web.StreamResponse:
    """Write SSE the way Triton does: ``data: <json>\\n\\n`` per response, no terminator.

    The status is fixed by the first response: an error first means an error status with the
    error as the only event; an error later arrives as an event under status 200.
    """
    status = error.status if error is not None and not responses else 200
    stream = web.StreamResponse(status=status, headers={"Content-Type": _SSE})
    await stream.prepare(request)
    events = [b"data: " + generate_body(model, rid, r) + b"\n\n" for r in responses]
    if error is not None:
        events.append(b"data: " + error_body(error.message) + b"\n\n")
    if "truncated" in faults and events:
        last = events[-1]
        events[-1] = last[: len(last) // 2]
    if not delay:
        await stream.write(b"".join(events))
    for index, event in enumerate(events if delay else ()):
        if index:
            await asyncio.sleep(delay)
        await stream.write(event)
    await stream.write_eof()
    return stream


# --- command line -----------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mock-triton",
        help="serve a stand-in for Triton's generate / generate_stream / infer HTTP API",
        description="A stand-in for NVIDIA Triton's HTTP API with a deterministic model, for "
        "trying the plugins and for tests. Not an inference server. Test-only fault injection: "
        f"request header {FAULT_HEADER}: " + ", ".join(FAULTS) + ".",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000,
                        help="port (default %(default)s, Triton's; 0 picks a free one)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME[:BACKEND[:POLICY]]",
                        help="serve this model (repeatable). BACKEND vllm|tensorrtllm|generic "
                        "(default --backend), POLICY decoupled|coupled. Default: "
                        + ", ".join(DEFAULT_MODELS))
    parser.add_argument("--backend", choices=BACKENDS, default="generic",
                        help="backend behaviour of models that name none (default %(default)s)")
    parser.add_argument("--trtllm-legacy", action="store_true",
                        help="TensorRT-LLM input names from before 2025-05 (random_seed, "
                        "min_length, no return_num_*_tokens)")
    parser.add_argument("--fail-after", type=int, metavar="N",
                        help="every stream sends an error event after N events (test-only)")
    parser.add_argument("--fault", metavar="NAMES",
                        help="faults for every model request without the header (test-only)")
    parser.add_argument("--token-delay-ms", type=int, default=0,
                        help="pause between stream events (default %(default)s)")
    parser.add_argument("--slow-ms", type=int, default=5000,
                        help="delay of the 'slow' fault (default %(default)s)")
    parser.add_argument("--max-input-size", type=int, default=64 * 1024 * 1024,
                        help="request body limit in bytes (default %(default)s)")
    parser.set_defaults(func=_run)


def _options(args: argparse.Namespace) -> MockOptions:
    return MockOptions(
        models=tuple(args.models or DEFAULT_MODELS), backend=args.backend,
        trtllm_legacy=args.trtllm_legacy, fail_after=args.fail_after, fault=args.fault,
        token_delay=args.token_delay_ms / 1000, slow_delay=args.slow_ms / 1000,
        max_input_size=args.max_input_size,
    )


def _run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        make_app(options)
    except ValueError as exc:
        print(f"mock-triton: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args.host, args.port, options))


async def _serve(host: str, port: int, options: MockOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        runner, actual = await _start(host, port, options)
    except OSError as exc:
        print(f"mock-triton: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    models = build_models(options)
    print(f"mock-triton: listening on http://{host}:{actual}", flush=True)
    for model in models.values():
        policy = "decoupled" if model.decoupled else "coupled"
        print(f"mock-triton: model {model.name} ({model.backend}, {policy}): "
              f"POST /v2/models/{model.name}/generate", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apisix_openai_triton.tools.mock_triton")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["mock-triton", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
