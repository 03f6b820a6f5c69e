"""What each ``bench`` workload sends, and what counts as a correct answer.

A workload is built once per client process: every call frame is encoded once per connection
(after PrepareConf gave the tokens) and every ExtraInfo answer once per distinct question, so the
client spends its CPU on moving bytes, not on the codec, and the runner stays the bottleneck.
The call id is a constant: the gateway recycles ids too, and the runner only echoes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Optional

import orjson

from apisix_openai_triton.plugins.state import STATE_HEADER, STATE_VAR
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import decode_to_gateway, encode_to_runner
from apisix_openai_triton.runner.protocol.framing import FrameDecoder

WORKLOADS: dict[str, tuple[str, ...]] = {
    "baseline": ("-",),
    "noop": ("-",),
    "openai-request": ("1k", "200k"),
    "openai-response": ("2k", "sse500"),
    "openai-full": ("1k", "200k"),
}
"""Workload name -> the sizes it accepts (the first is the default)."""

NOOP_PLUGIN = "bench-noop"
NOOP_PLUGIN_REF = "apisix_openai_triton.tools.bench_plugins:NoopPlugin"
REQUEST_CONF: tuple[tuple[str, str], ...] = (
    ("openai-to-triton", '{"model":"m","backend":"vllm"}'),
)
RESPONSE_CONF: tuple[tuple[str, str], ...] = (("triton-to-openai", "{}"),)
NOOP_CONF: tuple[tuple[str, str], ...] = ((NOOP_PLUGIN, "{}"),)
CALL_ID = (1 << 22) + 7
"""A gateway-shaped id: worker 1, call 7."""

_LOCALHOST = bytes([127, 0, 0, 1])
_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
    "boxing matches near the old harbour and every lighthouse keeps its lamp burning "
    "through long winter nights of rain wind and distant thunder"
).split()

Check = Callable[[m.ToGateway], Optional[str]]
"""Full verification of a final answer: ``None`` when correct, else what is wrong."""


def _text(size: int, seed: int = 0) -> str:
    """Deterministic prose of exactly ``size`` characters (no markup, no special tokens)."""
    out: list[str] = []
    length = 0
    i = seed
    while length < size:
        word = _WORDS[i % len(_WORDS)]
        out.append(word)
        length += len(word) + 1
        i += 7
    return " ".join(out)[:size]


def chat_body(size: str, *, stream: bool = False) -> bytes:
    """An OpenAI chat request of about 1 KB or 200 KB (system prompt plus turns)."""
    target = {"1k": 1024, "200k": 200 * 1024}[size]
    turns = 1 if size == "1k" else 20
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": ""})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": ""})
    request: dict[str, object] = {"model": "m", "messages": messages, "max_tokens": 512,
                                  "temperature": 0.2, "stream": stream}
    overhead = len(orjson.dumps(request))
    share = max((target - overhead) // (len(messages) - 1), 1)
    for n, msg in enumerate(messages[1:]):
        msg["content"] = _text(share, seed=n)
    return orjson.dumps(request)


def generate_answer(size: str) -> tuple[list[m.Entry], bytes]:
    """Triton's answer (upstream headers, body): a 2 KB generate JSON or a 500-event SSE stream."""
    if size == "2k":
        body = orjson.dumps({
            "model_name": "m", "model_version": "1", "text_output": _text(1900),
            "finish_reason": "length", "num_input_tokens": 40, "num_output_tokens": 400,
        })
        return [("content-type", "application/json"), ("content-length", str(len(body))),
                ("date", "Thu, 26 Nov 2026 10:41:19 GMT")], body
    events = []
    for i in range(500):
        last = i == 499
        events.append(b"data: " + orjson.dumps({
            "model_name": "m", "model_version": "1", "text_output": " " + _WORDS[i % len(_WORDS)],
            "finish_reason": "length" if last else "None", "num_input_tokens": 40,
            "num_output_tokens": 1,
        }) + b"\n\n")
    return [("content-type", "text/event-stream; charset=utf-8"),
            ("transfer-encoding", "chunked")], b"".join(events)


def _request_call(token: int, body: Optional[bytes]) -> m.HTTPReqCallRequest:
    headers: list[m.Entry] = [
        ("host", "api.example.test"), ("user-agent", "OpenAI/Python 1.0"),
        ("accept", "application/json"), ("x-forwarded-for", "10.1.2.3"),
        ("x-forwarded-proto", "https"), ("x-forwarded-host", "api.example.test"),
        ("authorization", "Bearer sk-bench"),
    ]
    if body is None:
        return m.HTTPReqCallRequest(CALL_ID, token, 0, "/bench/noop", _LOCALHOST,
                                    [("a", "1")], headers)
    headers += [("content-type", "application/json"), ("content-length", str(len(body)))]
    return m.HTTPReqCallRequest(CALL_ID, token, 2, "/v1/chat/completions", _LOCALHOST, [], headers)


def _check_noop(msg: m.ToGateway) -> Optional[str]:
    if not isinstance(msg, m.HTTPReqCallResponse):
        return f"expected HTTPReqCall.Resp, got {type(msg).__name__}"
    if msg.id != CALL_ID:
        return f"call id {msg.id} echoed, {CALL_ID} sent"
    return None if msg.action is None else f"expected no action, got {msg.action!r}"


def _check_rewrite(msg: m.ToGateway) -> Optional[str]:
    if not isinstance(msg, m.HTTPReqCallResponse) or msg.id != CALL_ID:
        return f"expected HTTPReqCall.Resp with id {CALL_ID}, got {msg!r:.200}"
    action = msg.action
    if not isinstance(action, m.Rewrite):
        return f"expected a Rewrite, got {action!r:.300}"
    if not action.body or not (action.path or "").startswith("/v2/models/"):
        return f"Rewrite without a Triton path or body: path={action.path!r}"
    return None


def _check_converted(msg: m.ToGateway) -> Optional[str]:
    if not isinstance(msg, m.HTTPRespCallResponse) or msg.id != CALL_ID:
        return f"expected HTTPRespCall.Resp with id {CALL_ID}, got {msg!r:.200}"
    if msg.status not in (0, 200) or not msg.body:
        return f"expected a converted 200 answer, got status {msg.status}: {msg.body[:200]!r}"
    return None


@dataclass(frozen=True, slots=True)
class Phase:
    """One exchange of a call: a call message, ExtraInfo round trips, then one final answer."""

    conf_index: int
    build: Callable[[int], m.ToRunner]
    final_type: int
    check: Check


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What a client process needs to rebuild a workload (picklable, unlike the workload)."""

    name: str
    size: str = "-"
    state: Optional[str] = None


@dataclass(slots=True)
class Workload:
    """Confs to prepare on each connection, the phases of one call, and the gateway's answers."""

    spec: WorkloadSpec
    confs: tuple[tuple[tuple[str, str], ...], ...]
    phases: tuple[Phase, ...]
    variables: Mapping[str, bytes] = field(default_factory=dict)
    req_body: Optional[bytes] = None
    resp_body: Optional[bytes] = None
    _answers: dict[bytes, bytes] = field(default_factory=dict)

    def prepare_frames(self) -> list[bytes]:
        """One PrepareConf frame per conf, sent on each connection before its first call."""
        return [encode_to_runner(m.PrepareConfRequest(list(conf)))
                for conf in self.confs]

    def call_frames(self, tokens: list[int]) -> list[bytes]:
        """The frame that opens each phase, for this connection's tokens."""
        return [encode_to_runner(p.build(tokens[p.conf_index])) for p in self.phases]

    def answer(self, question: bytes) -> bytes:
        """The gateway's ExtraInfo answer frame to a question payload (cached per payload)."""
        frame = self._answers.get(question)
        if frame is not None:
            return frame
        msg = decode_to_gateway(m.MessageType.EXTRA_INFO, question)
        result: Optional[bytes] = None
        if isinstance(msg, m.ExtraInfoRequest):
            info = msg.info
            if isinstance(info, m.Var):
                result = self.variables.get(info.name)
            elif isinstance(info, m.ReqBody):
                result = self.req_body
            else:
                result = self.resp_body
        frame = encode_to_runner(m.ExtraInfoResponse(result))
        if len(self._answers) < 256:
            self._answers[question] = frame
        return frame


def build_workload(spec: WorkloadSpec) -> Workload:
    """The workload named by ``spec`` (``openai-response`` and ``openai-full`` need ``state``)."""
    name, size = spec.name, spec.size
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    if size == "-":
        size = WORKLOADS[name][0]
    if size not in WORKLOADS[name]:
        raise ValueError(f"workload {name} takes --size {' or '.join(WORKLOADS[name])}, not {size}")
    if name in ("noop", "baseline"):
        return Workload(spec, (NOOP_CONF,), (Phase(0, lambda t: _request_call(t, None), 2, _check_noop),))
    variables = {STATE_VAR: spec.state.encode()} if spec.state else {}
    if name == "openai-request":
        body = chat_body(size)
        return Workload(spec, (REQUEST_CONF,),
                        (Phase(0, lambda t: _request_call(t, body), 2, _check_rewrite),),
                        variables, req_body=body)
    if spec.state is None:
        raise ValueError(f"workload {name} needs a signed state header value")
    resp_size = size if name == "openai-response" else "2k"
    resp_headers, resp_body = generate_answer(resp_size)

    def response_call(token: int) -> m.ToRunner:
        return m.HTTPRespCallRequest(CALL_ID, token, 200, list(resp_headers))

    response_phase = Phase(1 if name == "openai-full" else 0,
                           response_call, 4, _check_converted)
    if name == "openai-response":
        return Workload(spec, (RESPONSE_CONF,), (response_phase,), variables, resp_body=resp_body)
    body = chat_body(size)
    request_phase = Phase(0, lambda t: _request_call(t, body), 2, _check_rewrite)
    return Workload(spec, (REQUEST_CONF, RESPONSE_CONF), (request_phase, response_phase),
                    variables, req_body=body, resp_body=resp_body)


def state_needed(spec: WorkloadSpec) -> bool:
    """Whether the workload answers the response plugin's state variable."""
    return spec.name in ("openai-response", "openai-full")


async def fetch_state(socket_path: str, *, stream: bool, timeout: float = 10.0) -> str:
    """A state header value signed by this runner: one openai-request call, read off its Rewrite.

    The response plugin refuses a state it did not sign, so the benchmark cannot make one up.
    """
    body = chat_body("1k", stream=stream)
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(socket_path), timeout)
    decoder = FrameDecoder()

    async def read_frame() -> tuple[int, bytes]:
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                return frame
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                raise ConnectionError("the runner closed the connection")
            decoder.feed(data)

    try:
        writer.write(encode_to_runner(m.PrepareConfRequest(list(REQUEST_CONF))))
        kind, payload = await read_frame()
        prepared = decode_to_gateway(kind, payload)
        if not isinstance(prepared, m.PrepareConfResponse):
            raise RuntimeError(f"PrepareConf of {REQUEST_CONF} refused: {prepared!r} "
                               "(is the openai-to-triton plugin loaded?)")
        writer.write(encode_to_runner(_request_call(prepared.conf_token, body)))
        while True:
            kind, payload = await read_frame()
            if kind != m.MessageType.EXTRA_INFO:
                break
            question = decode_to_gateway(kind, payload)
            assert isinstance(question, m.ExtraInfoRequest)
            answer = body if isinstance(question.info, m.ReqBody) else None
            writer.write(encode_to_runner(m.ExtraInfoResponse(answer)))
        final = decode_to_gateway(kind, payload)
    finally:
        writer.close()
    problem = _check_rewrite(final)
    if problem is not None:
        raise RuntimeError(f"openai-to-triton did not rewrite the bench chat: {problem}")
    assert isinstance(final, m.HTTPReqCallResponse) and isinstance(final.action, m.Rewrite)
    for name, value in final.action.headers:
        if name == STATE_HEADER and value:
            return value
    raise RuntimeError(f"the Rewrite carries no {STATE_HEADER} header")
