"""Every named template against hand-written prompts (facts sheet section 9), and chat_template."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from apisix_openai_triton.plugins.errors import OpenAIError
from apisix_openai_triton.plugins.request_conf import RequestConf, parse_request_conf
from apisix_openai_triton.plugins.request_transform import transform
from apisix_openai_triton.runner import ConfError


def prompt(conf: RequestConf | str, messages: list[dict[str, Any]], **extra: Any) -> str:
    if isinstance(conf, str):
        conf = parse_request_conf(conf)
    body = orjson.dumps({"model": "m", "messages": messages, **extra})
    text = orjson.loads(transform(conf, "chat", body).body)["text_input"]
    assert isinstance(text, str)
    return text


def conf(**keys: Any) -> str:
    return orjson.dumps({"model": "m", **keys}).decode()


SYS = {"role": "system", "content": "Be brief."}
U1 = {"role": "user", "content": "Hi!"}
A1 = {"role": "assistant", "content": "Hello."}
U2 = {"role": "user", "content": "2+2?"}

H = "<|start_header_id|>{}<|end_header_id|>\n\n"
EOT = "<|eot_id|>"


# --- Llama 3 -------------------------------------------------------------------------------------


def test_llama3_multi_turn_with_system_two_newlines_and_bos() -> None:
    expected = ("<|begin_of_text|>" + H.format("system") + "Be brief." + EOT + H.format("user")
                + "Hi!" + EOT + H.format("assistant") + "Hello." + EOT + H.format("user") + "2+2?"
                + EOT + H.format("assistant"))
    assert prompt(conf(bos=True), [SYS, U1, A1, U2]) == expected


def test_llama3_default_has_no_bos_and_no_system_block_when_absent() -> None:
    assert prompt(conf(), [U1]) == H.format("user") + "Hi!" + EOT + H.format("assistant")


def test_llama3_developer_is_system_and_text_is_stripped() -> None:
    got = prompt(conf(), [{"role": "developer", "content": "  rules \n"}, U1])
    assert got == H.format("system") + "rules" + EOT + H.format("user") + "Hi!" + EOT + H.format(
        "assistant")


def test_llama3_empty_content_unicode_and_content_parts() -> None:
    parts = [{"type": "text", "text": "Grüße 東京"}, {"type": "text", "text": "🙂"}]
    got = prompt(conf(), [{"role": "user", "content": ""}, A1,
                          {"role": "user", "content": parts}])
    assert got == (H.format("user") + EOT + H.format("assistant") + "Hello." + EOT
                   + H.format("user") + "Grüße 東京\n🙂" + EOT + H.format("assistant"))


def test_llama3_tool_message_keeps_its_role_header() -> None:
    got = prompt(conf(), [U1, {"role": "tool", "content": "42", "tool_call_id": "c1"}])
    assert H.format("tool") + "42" + EOT in got


def test_llama31_always_has_the_date_block() -> None:
    expected = (H.format("system") + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024"
                "\n\n" + EOT + H.format("user") + "Hi!" + EOT + H.format("assistant"))
    assert prompt(conf(template="llama3.1"), [U1]) == expected


def test_llama31_system_in_block_date_from_conf_later_system_in_place() -> None:
    got = prompt(conf(template="llama3.1", date_string="01 Jan 2026"),
                 [SYS, U1, {"role": "system", "content": "Now French."}, U2])
    assert got == (H.format("system") + "Cutting Knowledge Date: December 2023\nToday Date: "
                   "01 Jan 2026\n\nBe brief." + EOT + H.format("user") + "Hi!" + EOT
                   + H.format("system") + "Now French." + EOT + H.format("user") + "2+2?" + EOT
                   + H.format("assistant"))


WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather now",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}}}}}


def test_llama31_tools_go_in_the_first_user_message_and_tool_role_is_ipython() -> None:
    messages = [SYS, {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'}]
    got = prompt(conf(template="llama3.1"), messages, tools=[WEATHER])
    tool_json = json.dumps(WEATHER, indent=4)
    expected = (
        H.format("system") + "Environment: ipython\nCutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\nBe brief." + EOT
        + H.format("user") + "Given the following functions, please respond with a JSON for a "
        "function call with its proper arguments that best answers the given prompt.\n\n"
        'Respond in the format {"name": function name, "parameters": dictionary of argument name '
        'and its value}.Do not use variables.\n\n' + tool_json + "\n\nWeather in Paris?" + EOT
        + H.format("assistant") + '{"name": "weather", "parameters": {"city": "Paris"}}' + EOT
        + H.format("ipython") + '{"temp": 21}' + EOT + H.format("assistant"))
    assert got == expected


def test_llama31_tool_choice_none_renders_no_tools() -> None:
    got = prompt(conf(template="llama3.1"), [U1], tools=[WEATHER], tool_choice="none")
    assert "Environment: ipython" not in got and "weather" not in got


def test_llama31_refuses_two_tool_calls_in_one_message() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with pytest.raises(OpenAIError) as err:
        prompt(conf(template="llama3.1"), [U1, {"role": "assistant", "tool_calls": [call, call]}])
    assert err.value.param == "messages[1].tool_calls"


# --- Mistral -------------------------------------------------------------------------------------


@pytest.mark.parametrize("template, expected", [
    ("mistral-v1", "<s> [INST] Hi! [/INST] Hello.</s> [INST] 2+2? [/INST]"),
    ("mistral-v3", "<s>[INST] Hi![/INST] Hello.</s>[INST] 2+2?[/INST]"),
    ("mistral-tekken", "<s>[INST]Hi![/INST]Hello.</s>[INST]2+2?[/INST]"),
])
def test_mistral_spacing_per_tokenizer_version(template: str, expected: str) -> None:
    assert prompt(conf(template=template, bos=True), [U1, A1, U2]) == expected


def test_mistral_variant_key_and_default_v3() -> None:
    assert prompt(conf(template="mistral", mistral_variant="v1"), [U1]) == "[INST] Hi! [/INST]"
    assert prompt(conf(template="mistral"), [U1]) == "[INST] Hi![/INST]"


def test_mistral_folds_system_into_first_user_message() -> None:
    got = prompt(conf(template="mistral-v3"), [SYS, U1, A1, U2])
    assert got == "[INST] Be brief.\n\nHi![/INST] Hello.</s>[INST] 2+2?[/INST]"


@pytest.mark.parametrize("messages, param", [
    ([U1, U2], "messages[1].role"),
    ([A1, U1], "messages[0].role"),
    ([U1, A1], "messages[1].role"),
    ([SYS], "messages"),
    ([U1, {"role": "tool", "content": "x", "tool_call_id": "c"}], "messages[1].role"),
])
def test_mistral_refuses_what_its_template_cannot_render(messages: list[dict[str, Any]],
                                                         param: str) -> None:
    with pytest.raises(OpenAIError) as err:
        prompt(conf(template="mistral-v3"), messages)
    assert (err.value.status, err.value.param) == (400, param)


# --- ChatML and Gemma ----------------------------------------------------------------------------


def test_chatml_layout_roles_as_given_and_no_bos_even_when_asked() -> None:
    got = prompt(conf(template="chatml", bos=True),
                 [SYS, U1, A1, {"role": "tool", "content": "t", "tool_call_id": "c"}])
    assert got == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                   "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>tool\nt<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_gemma_layout_model_role_and_folded_system() -> None:
    got = prompt(conf(template="gemma", bos=True), [SYS, U1, A1, U2])
    assert got == ("<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n"
                   "Hello.<end_of_turn>\n<start_of_turn>user\n2+2?<end_of_turn>\n"
                   "<start_of_turn>model\n")


def test_gemma_without_system_and_with_empty_content() -> None:
    got = prompt(conf(template="gemma"), [{"role": "user", "content": ""}])
    assert got == "<start_of_turn>user\n<end_of_turn>\n<start_of_turn>model\n"


def test_gemma_refuses_a_system_message_after_the_start() -> None:
    with pytest.raises(OpenAIError) as err:
        prompt(conf(template="gemma"), [U1, A1, SYS, U2])
    assert err.value.param == "messages[2].role"


# --- chat_template (Jinja, sandboxed) ------------------------------------------------------------

CHATML_JINJA = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_chat_template_renders_like_the_builtin_it_copies() -> None:
    messages = [SYS, U1, A1, U2]
    assert prompt(conf(chat_template=CHATML_JINJA), messages) == prompt(conf(template="chatml"),
                                                                         messages)


def test_chat_template_gets_bos_token_tools_and_strips_bos_unless_asked() -> None:
    source = "{{ bos_token }}{% if tools %}T={{ tools[0].function.name }};{% endif %}" \
             "{{ messages[-1].content }}"
    keys = {"chat_template": source, "bos_token": "<s>"}
    assert prompt(conf(**keys), [U1], tools=[WEATHER]) == "T=weather;Hi!"
    assert prompt(conf(bos=True, **keys), [U1]) == "<s>Hi!"


def test_chat_template_raise_exception_becomes_a_400() -> None:
    source = "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}x"
    with pytest.raises(OpenAIError) as err:
        prompt(conf(chat_template=source), [SYS, U1])
    assert (err.value.status, err.value.code) == (400, "template_error")
    assert "user first" in err.value.message


def test_chat_template_cannot_reach_python_internals() -> None:
    source = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ConfError):
        parse_request_conf(conf(chat_template=source))


def test_chat_template_output_size_is_limited() -> None:
    source = "{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}"
    loaded = parse_request_conf(conf(chat_template="{{ messages[0].content }}",
                                     max_prompt_chars=1000))
    with pytest.raises(OpenAIError) as err:
        prompt(loaded, [{"role": "user", "content": "x" * 1001}])
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(ConfError, match="context_length|over"):
        parse_request_conf(conf(chat_template=source, max_prompt_chars=1000))


def test_chat_template_string_multiplication_bomb_is_stopped() -> None:
    source = "{{ 'x' * 1000000000 }}"
    with pytest.raises(ConfError):
        parse_request_conf(conf(chat_template=source))


def test_chat_template_render_time_is_limited() -> None:
    # Nested loops that only read attributes: stopped by the deadline, not run to the end.
    source = ("{% for a in range(100000) %}{% for b in range(100000) %}{{ messages[0].role[:0] }}"
              "{% endfor %}{% endfor %}ok")
    with pytest.raises(ConfError, match="did not finish"):
        parse_request_conf(conf(chat_template=source, render_timeout_ms=50))


def test_chat_template_syntax_error_is_a_conf_error() -> None:
    with pytest.raises(ConfError, match="chat_template"):
        parse_request_conf(conf(chat_template="{% for %}"))
