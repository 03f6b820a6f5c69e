"""Property tests: any JSON body through the request plugin over the socket is a Rewrite with a
valid Triton body or a 4xx OpenAI envelope, never a 503; 10,000 generated invalid bodies are
all 4xx envelopes (at the pure-function level, for speed)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai_shapes import check_error_envelope
from reliability_kit import Tag, ThreadRunner

from apisix_openai_triton.plugins.errors import OpenAIError
from apisix_openai_triton.plugins.openai_to_triton import OpenAIToTriton
from apisix_openai_triton.plugins.request_conf import parse_request_conf
from apisix_openai_triton.plugins.request_transform import transform
from apisix_openai_triton.plugins.state import STATE_HEADER, decode_state
from apisix_openai_triton.runner.testkit import GatewayClient

CONF = {"model": "m", "template": "llama3", "max_body_bytes": 64 * 1024}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
VALUE = st.none() | st.booleans() | st.integers(-5, 300) | st.floats(-3, 3, allow_nan=False) \
    | st.text(max_size=20) | st.lists(st.text(max_size=5), max_size=5)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer", "bogus"])},
    optional={"content": st.text(max_size=40) | st.none() | st.lists(
                  st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]),
                                         "text": st.text(max_size=20)}), max_size=3) | JSON,
              "name": st.text(max_size=10) | JSON, "tool_call_id": st.text(max_size=8)},
)
CHATTY = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, max_size=5) | JSON},
    optional={key: VALUE for key in ("model", "max_tokens", "max_completion_tokens", "temperature",
                                     "top_p", "n", "stream", "stop", "seed", "presence_penalty",
                                     "frequency_penalty", "logprobs", "user")},
)
VALID = st.fixed_dictionaries(
    {"messages": st.lists(st.fixed_dictionaries({
        "role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(min_size=1, max_size=60)}),
        min_size=1, max_size=4).map(lambda ms: ms + [{"role": "user", "content": "go"}])},
    optional={"max_tokens": st.integers(1, 10_000), "temperature": st.floats(0, 2),
              "stream": st.booleans(), "stop": st.lists(st.text(min_size=1, max_size=5), max_size=4),
              "seed": st.integers(-2 ** 63, 2 ** 63 - 1), "model": st.text(max_size=10)},
)


class Live:
    def __init__(self, runner: ThreadRunner, gateway: GatewayClient) -> None:
        self.runner = runner
        self.gateway = gateway
        self.rewrites = 0
        self.stops = 0


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    runner = ThreadRunner([OpenAIToTriton, Tag]).start()

    async def client() -> GatewayClient:
        return GatewayClient(runner.socket_path)

    state = Live(runner, runner.call(client()))
    yield state
    runner.call(state.gateway.close())
    runner.stop()
    assert state.rewrites > 10 and state.stops > 10  # both outcomes were exercised


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(JSON, CHATTY, VALID), st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_any_json_body_is_a_triton_request_or_a_4xx_envelope(live: Live, doc: Any, path: str) -> None:
    if path == "/v1/completions" and isinstance(doc, dict) and "messages" in doc:
        doc = dict(doc, prompt=doc.pop("messages"))
    outcome = live.runner.call(live.gateway.request(
        [("openai-to-triton", CONF)], method="POST", path=path, body=json.dumps(doc).encode()))
    if outcome.action == "stop":
        live.stops += 1
        assert 400 <= outcome.response.status < 500, outcome.response.status
        check_error_envelope(outcome.response.body)
        return
    assert outcome.action == "rewrite", (outcome.action, outcome.error)
    live.rewrites += 1
    upstream = outcome.upstream
    assert upstream.path in ("/v2/models/m/generate", "/v2/models/m/generate_stream")
    assert upstream.header("content-type") == "application/json"
    body = upstream.json()
    assert isinstance(body["text_input"], str) and body["text_input"]
    assert decode_state(upstream.header(STATE_HEADER)).model == "m"


def _invalid_bodies(rng: random.Random) -> Iterator[bytes]:
    """Bodies that are each wrong in one way a client can get wrong."""
    ok_messages = [{"role": "user", "content": "hi"}]
    bad_params: list[tuple[str, Any]] = [
        ("temperature", 2.5), ("temperature", -0.1), ("temperature", "hot"), ("top_p", 1.5),
        ("top_p", []), ("max_tokens", 0), ("max_tokens", -7), ("max_tokens", "many"),
        ("max_tokens", 1.5), ("n", 0), ("n", 2), ("n", "two"), ("stream", "yes"), ("stream", 1),
        ("stop", 5), ("stop", ["a", "b", "c", "d", "e"]), ("stop", [""]), ("stop", [1]),
        ("presence_penalty", 3), ("frequency_penalty", -2.5), ("seed", "s"), ("seed", 2 ** 70),
        ("stream_options", {"include_usage": True}), ("model", 5),
        ("messages", []), ("messages", "hi"), ("messages", {"role": "user"}),
        ("logit_bias", {"1": 5}),
    ]
    bad_messages: list[Any] = [
        {"role": "user"}, {"role": "wizard", "content": "x"}, {"content": "x"}, "text", 5, None,
        {"role": "user", "content": 5}, {"role": "user", "content": [{"type": "text"}]},
        {"role": "user", "content": [{"type": "audio", "text": "x"}]}, [1, 2],
        {"role": "user", "content": [5]}, {"role": "tool", "content": "x"},
    ]
    while True:
        family = rng.randrange(6)
        if family == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))) + b"\xff"
        elif family == 1:
            yield json.dumps(rng.choice([None, 1, 2.5, "s", [1], [], True, [{"messages": []}]])).encode()
        elif family == 2:
            doc = {"model": "m", **{f"k{i}": i for i in range(rng.randrange(3))}}
            yield json.dumps(doc).encode()
        elif family == 3:
            key, value = rng.choice(bad_params)
            yield json.dumps({"model": "m", "messages": ok_messages, key: value}).encode()
        elif family == 4:
            messages = list(ok_messages) * rng.randrange(3)
            messages.insert(rng.randrange(len(messages) + 1), rng.choice(bad_messages))
            yield json.dumps({"messages": messages}).encode()
        else:
            text = json.dumps({"messages": ok_messages, "pad": "x" * (64 * 1024)}).encode()
            yield text[:rng.randrange(len(text) - 1)] if rng.random() < 0.5 else text


def test_ten_thousand_invalid_bodies_are_all_4xx_envelopes() -> None:
    conf = parse_request_conf(json.dumps(CONF))
    rng = random.Random(20261126)
    bodies = _invalid_bodies(rng)
    statuses: dict[int, int] = {}
    for _ in range(10_000):
        body = next(bodies)
        with pytest.raises(OpenAIError) as caught:
            transform(conf, "chat", body)
        error = caught.value
        assert 400 <= error.status < 500, (body[:200], error.status)
        check_error_envelope(error.body())
        statuses[error.status] = statuses.get(error.status, 0) + 1
    assert sum(statuses.values()) == 10_000 and {400, 413} <= set(statuses)
