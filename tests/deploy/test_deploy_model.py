"""The demo Triton model (deploy/triton/models/demo): its config.pbtxt against what model.py
really reads and writes, and the generate semantics of Triton's vLLM backend that the
openai-to-triton `vllm` profile relies on (usage, finish_reason, streaming deltas)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import numpy as np
import pytest


DEMO_MODEL = Path(__file__).resolve().parents[2] / "deploy" / "triton" / "models" / "demo"
NUMPY_TYPES = {"TYPE_STRING": np.object_, "TYPE_BOOL": np.bool_, "TYPE_UINT32": np.uint32}
FINAL = 1


@pytest.fixture()
def config(pbtxt: ModuleType) -> dict[str, Any]:
    parsed: dict[str, Any] = pbtxt.parse((DEMO_MODEL / "config.pbtxt").read_text(encoding="utf-8"))
    return parsed


def tensors(config: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {t["name"][0]: t for t in config[kind]}


class Harness:
    """Builds requests the way Triton would from config.pbtxt and runs them through the model."""

    def __init__(self, model: ModuleType, pb_utils: ModuleType, config: dict[str, Any]) -> None:
        self.pb_utils = pb_utils
        self.inputs = tensors(config, "input")
        self.instance = model.TritonPythonModel()
        self.instance.initialize({"model_config": json.dumps(
            {"model_transaction_policy": {"decoupled": True}})})

    def request(self, parameters: Optional[dict[str, Any]] = None,
                cancel_after: Optional[int] = None, **values: Any) -> Any:
        built = []
        for name, value in values.items():
            assert name in self.inputs, f"Triton would reject undeclared input {name!r}"
            dtype = NUMPY_TYPES[self.inputs[name]["data_type"][0]]
            if dtype is np.object_:
                array = np.array([value.encode("utf-8") if isinstance(value, str) else value],
                                 dtype=np.object_)
            else:
                array = np.array([value], dtype=dtype)
            built.append(self.pb_utils.Tensor(name, array))
        for name, spec in self.inputs.items():
            if not spec.get("optional", [False])[0]:
                assert name in values, f"Triton would reject a request without {name!r}"
        return self.pb_utils.InferenceRequest(built, parameters, cancel_after)

    def run(self, *requests: Any) -> list[Any]:
        assert self.instance.execute(list(requests)) is None  # decoupled models return nothing
        return [r.get_response_sender() for r in requests]


def out(response: Any, name: str) -> Any:
    found = [t.as_numpy() for t in response.output_tensors() if t.name() == name]
    assert len(found) == 1, f"expected one {name!r} output"
    return found[0]


def texts(response: Any) -> list[str]:
    return [v.decode("utf-8") for v in out(response, "text_output")]


FULL: dict[str, Any] = {"exclude_input_in_output": True, "return_finish_reason": True,
        "return_num_input_tokens": True, "return_num_output_tokens": True}


def sampling(**fields: Any) -> str:
    return json.dumps(fields)


@pytest.fixture()
def harness(demo_model: ModuleType, pb_utils: ModuleType, config: dict[str, Any]) -> Harness:
    return Harness(demo_model, pb_utils, config)


def generate(harness: Harness, prompt: str, stream: bool = False, **fields: Any) -> Any:
    (sender,) = harness.run(harness.request(
        text_input=prompt, stream=stream, sampling_parameters=sampling(**fields), **FULL))
    return sender


# --- config.pbtxt -------------------------------------------------------------------------

def test_config_is_a_decoupled_python_model_named_after_its_folder(config: dict[str, Any],
                                                                   pbtxt: ModuleType) -> None:
    assert pbtxt.one(config, "name") == DEMO_MODEL.name
    assert pbtxt.one(config, "backend") == "python"
    assert pbtxt.one(config, "max_batch_size") == 0
    assert pbtxt.one(pbtxt.one(config, "model_transaction_policy"), "decoupled") is True
    assert [pbtxt.one(g, "kind") for g in config["instance_group"]] == ["KIND_CPU"]
    assert (DEMO_MODEL / "1" / "model.py").is_file()


def test_only_text_input_is_required(config: dict[str, Any]) -> None:
    required = {n for n, t in tensors(config, "input").items() if not t.get("optional", [False])[0]}
    assert required == {"text_input"}


def test_config_declares_exactly_what_the_model_reads_and_writes(
        harness: Harness, config: dict[str, Any]) -> None:
    plain = harness.request(text_input="a b c", sampling_parameters=sampling(max_tokens=4), **FULL)
    streamed = harness.request(text_input="a b c", stream=True,
                               sampling_parameters=sampling(max_tokens=4, n=2), **FULL)
    senders = harness.run(plain, streamed)
    read = plain.asked | streamed.asked
    written = {t.name() for s in senders for r in s.responses for t in r.output_tensors()}
    assert read == set(tensors(config, "input"))
    assert written == set(tensors(config, "output"))


def test_outputs_have_the_declared_types_and_shapes(harness: Harness, config: dict[str, Any]) -> None:
    declared = tensors(config, "output")
    sender = generate(harness, "one two", stream=True, max_tokens=3, n=2)
    for response in sender.responses:
        for tensor in response.output_tensors():
            spec = declared[tensor.name()]
            array = tensor.as_numpy()
            assert array.dtype == NUMPY_TYPES[spec["data_type"][0]], tensor.name()
            dims = spec["dims"]
            assert array.ndim == len(dims), tensor.name()
            assert all(d == -1 or d == s for d, s in zip(dims, array.shape)), tensor.name()


# --- generate semantics --------------------------------------------------------------------

def test_same_prompt_same_text_other_prompt_other_text(harness: Harness) -> None:
    first = texts(generate(harness, "Tell me about fjords", max_tokens=12).responses[0])
    again = texts(generate(harness, "Tell me about fjords", max_tokens=12).responses[0])
    other = texts(generate(harness, "Tell me about rivers", max_tokens=12).responses[0])
    assert first == again
    assert first != other
    assert first[0].strip()


def test_seed_changes_the_text(harness: Harness) -> None:
    a = texts(generate(harness, "same prompt", max_tokens=10, seed=1).responses[0])
    b = texts(generate(harness, "same prompt", max_tokens=10, seed=2).responses[0])
    assert a != b


def test_max_tokens_cuts_the_answer_with_finish_reason_length(harness: Harness) -> None:
    sender = generate(harness, "a long story please", max_tokens=3)
    (response,) = sender.responses
    assert sender.sent[-1][1] == FINAL
    assert len(texts(response)[0].split()) == 3
    assert out(response, "num_output_tokens").tolist() == [3]
    assert [v.decode() for v in out(response, "finish_reason")] == ["length"]
    assert out(response, "num_input_tokens").tolist() == [4]


def test_a_natural_end_is_stop_and_counts_the_end_of_text_token(harness: Harness) -> None:
    (response,) = generate(harness, "hi", max_tokens=4096).responses
    words = len(texts(response)[0].split())
    assert 6 <= words <= 31
    assert out(response, "num_output_tokens").tolist() == [words + 1]
    assert [v.decode() for v in out(response, "finish_reason")] == ["stop"]


def test_ignore_eos_runs_to_max_tokens(harness: Harness) -> None:
    (response,) = generate(harness, "hi", max_tokens=60, ignore_eos=True).responses
    assert out(response, "num_output_tokens").tolist() == [60]
    assert [v.decode() for v in out(response, "finish_reason")] == ["length"]


def test_min_tokens_delays_the_natural_end(harness: Harness) -> None:
    (response,) = generate(harness, "hi", max_tokens=100, min_tokens=40).responses
    assert len(texts(response)[0].split()) == 40
    assert out(response, "num_output_tokens").tolist() == [41]


def test_stream_sends_deltas_then_final_that_add_up_to_the_plain_answer(harness: Harness) -> None:
    (plain,) = generate(harness, "stream me something", max_tokens=4096).responses
    sender = generate(harness, "stream me something", stream=True, max_tokens=4096)
    responses = sender.responses
    assert len(responses) > 3
    assert [flags for _, flags in sender.sent] == [0] * (len(responses) - 1) + [FINAL]
    assert "".join(texts(r)[0] for r in responses) == texts(plain)[0]
    reasons = [out(r, "finish_reason")[0].decode() for r in responses]
    assert reasons == ["None"] * (len(responses) - 1) + ["stop"]
    assert sum(int(out(r, "num_output_tokens")[0]) for r in responses) == int(
        out(plain, "num_output_tokens")[0])
    assert all(out(r, "num_input_tokens").tolist() == [3] for r in responses)
    assert texts(responses[-1]) == [""]  # the end-of-text token adds no text


def test_stream_honours_max_tokens(harness: Harness) -> None:
    sender = generate(harness, "count", stream=True, max_tokens=5)
    assert len(sender.responses) == 5
    assert out(sender.responses[-1], "finish_reason")[0] == b"length"


def test_stop_string_ends_the_text_before_it_in_both_modes(harness: Harness) -> None:
    (full,) = generate(harness, "find a stop", max_tokens=40, ignore_eos=True).responses
    words = texts(full)[0].split(" ")
    stop = " " + words[5][:3]  # spans a token boundary: the space comes from the next token
    expected = texts(full)[0].split(stop)[0]
    (plain,) = generate(harness, "find a stop", max_tokens=40, ignore_eos=True, stop=[stop]).responses
    assert texts(plain) == [expected]
    assert out(plain, "finish_reason")[0] == b"stop"
    streamed = generate(harness, "find a stop", stream=True, max_tokens=40, ignore_eos=True, stop=stop)
    deltas = [texts(r)[0] for r in streamed.responses]
    assert "".join(deltas) == expected
    assert len(streamed.responses) == int(out(plain, "num_output_tokens")[0])
    assert out(streamed.responses[-1], "finish_reason")[0] == b"stop"


def test_prompt_is_echoed_only_when_not_excluded_and_not_streaming(harness: Harness) -> None:
    (echoed,) = harness.run(harness.request(text_input="echo this",
                                            sampling_parameters=sampling(max_tokens=2)))
    assert texts(echoed.responses[0])[0].startswith("echo this")
    (kept_out,) = harness.run(harness.request(text_input="echo this", exclude_input_in_output=True,
                                              sampling_parameters=sampling(max_tokens=2)))
    assert not texts(kept_out.responses[0])[0].startswith("echo this")
    (streamed,) = harness.run(harness.request(text_input="echo this", stream=True,
                                              sampling_parameters=sampling(max_tokens=2)))
    assert "echo" not in "".join(texts(r)[0] for r in streamed.responses)


def test_outputs_are_only_sent_when_asked_for(harness: Harness) -> None:
    (sender,) = harness.run(harness.request(text_input="x", exclude_input_in_output=True,
                                            sampling_parameters=sampling(max_tokens=2)))
    assert [t.name() for t in sender.responses[0].output_tensors()] == ["text_output"]


def test_n_choices_are_distinct_and_stream_side_by_side(harness: Harness) -> None:
    (plain,) = generate(harness, "two ways", max_tokens=4096, n=2).responses
    first, second = texts(plain)
    assert first != second
    streamed = generate(harness, "two ways", stream=True, max_tokens=4096, n=2).responses
    assert all(len(texts(r)) == 2 for r in streamed)
    assert ["".join(texts(r)[i] for r in streamed) for i in (0, 1)] == [first, second]
    counts = [sum(int(out(r, "num_output_tokens")[i]) for r in streamed) for i in (0, 1)]
    assert counts == out(plain, "num_output_tokens").tolist()


def test_request_parameters_are_used_without_sampling_parameters(harness: Harness) -> None:
    (sender,) = harness.run(harness.request({"max_tokens": 2}, text_input="hello there", **FULL))
    assert out(sender.responses[0], "num_output_tokens").tolist() == [2]


def test_unicode_survives_as_utf8(harness: Harness) -> None:
    produced = "".join(texts(generate(harness, f"prompt {i}", max_tokens=30, ignore_eos=True)
                             .responses[0])[0] for i in range(10))
    assert any(ord(c) > 127 for c in produced)
    (sender,) = harness.run(harness.request(text_input="naïve café 東京", **FULL,
                                            sampling_parameters=sampling(max_tokens=2)))
    assert out(sender.responses[0], "num_input_tokens").tolist() == [3]


@pytest.mark.parametrize(("inputs", "message"), [
    ({"stream": True, "exclude_input_in_output": False}, "`exclude_input_in_output` = False"),
    ({"sampling_parameters": '{"max_tokens": 0}'}, "max_tokens"),
    ({"sampling_parameters": '{"max_tokens": 40000}'}, "max_tokens"),
    ({"sampling_parameters": '{"id": "x"}'}, "unknown sampling parameters: id"),
    ({"sampling_parameters": "{not json"}, "not valid JSON"),
    ({"sampling_parameters": '["max_tokens"]'}, "JSON object"),
    ({"sampling_parameters": '{"stop": [""]}'}, "stop"),
    ({"sampling_parameters": '{"n": 9}'}, "'n'"),
    ({"sampling_parameters": '{"seed": "7"}'}, "seed"),
])
def test_bad_requests_get_one_final_invalid_argument_error(
        harness: Harness, pb_utils: ModuleType, inputs: dict[str, Any], message: str) -> None:
    (sender,) = harness.run(harness.request(text_input="x", **inputs))
    ((response, flags),) = sender.sent
    assert flags == FINAL
    assert response.has_error()
    assert message in response.error().message()
    assert response.error().code() == pb_utils.TritonError.INVALID_ARG


def test_cancelled_stream_ends_with_a_cancelled_error(harness: Harness, pb_utils: ModuleType) -> None:
    request = harness.request(text_input="x", stream=True, cancel_after=2,
                              sampling_parameters=sampling(max_tokens=10))
    (sender,) = harness.run(request)
    assert len(sender.sent) == 3
    response, flags = sender.sent[-1]
    assert flags == FINAL and response.error().code() == pb_utils.TritonError.CANCELLED


def test_one_bad_request_does_not_spoil_the_batch(harness: Harness) -> None:
    bad = harness.request(text_input="x", sampling_parameters="{")
    good = harness.request(text_input="x", sampling_parameters=sampling(max_tokens=2), **FULL)
    bad_sender, good_sender = harness.run(bad, good)
    assert bad_sender.responses[0].has_error()
    assert out(good_sender.responses[0], "num_output_tokens").tolist() == [2]


def test_a_non_decoupled_config_is_refused(demo_model: ModuleType, pb_utils: ModuleType) -> None:
    with pytest.raises(pb_utils.TritonModelException, match="decoupled"):
        demo_model.TritonPythonModel().initialize({"model_config": "{}"})
