"""Chat templates: the conversation rendered into the exact prompt text the model was tuned on.

The named templates are plain Python (they run on every request and must be fast); their
layouts follow the facts sheet (section 9) to the character. A Hugging Face ``chat_template``
string from the conf runs in a limited Jinja2 sandbox (``jinja_template``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, Optional

from .chat_request import Message
from .errors import OpenAIError, invalid

TEMPLATE_NAMES = ("llama3", "llama3.1", "mistral-v1", "mistral-v3", "mistral-tekken", "chatml",
                  "gemma")


def too_long(size: int, limit: int) -> OpenAIError:
    return invalid(f"The rendered prompt is over {limit} characters (this route's limit); "
                   "shorten the conversation.", "messages", "context_length_exceeded")


class Template:
    """A prompt renderer; one instance per conf."""

    name: str = ""
    bos_token: str = ""
    end_markers: tuple[str, ...] = ()
    """Strings that end an assistant turn (sent as stop words to backends that need them)."""
    tools: bool = False
    tool_role: bool = True

    def render(self, messages: Sequence[Message], tools: Optional[list[Any]], bos: bool) -> str:
        raise NotImplementedError


def _tool_json(value: Any, indent: Optional[int] = None) -> str:
    # Hugging Face's ``tojson`` filter: json.dumps, non-ASCII kept as is.
    return json.dumps(value, ensure_ascii=False, indent=indent)


class Llama3(Template):
    """Llama 3 / 3.1 Instruct (``ChatFormat``: header, two newlines, stripped text, eot)."""

    _TOOL_PROMPT: ClassVar[str] = (
        "Given the following functions, please respond with a JSON for a function call "
        "with its proper arguments that best answers the given prompt.\n\n"
        'Respond in the format {"name": function name, "parameters": dictionary of argument '
        'name and its value}.Do not use variables.\n\n'
    )

    def __init__(self, v31: bool, date_string: str) -> None:
        self.name = "llama3.1" if v31 else "llama3"
        self.bos_token = "<|begin_of_text|>"
        self.end_markers = ("<|eot_id|>", "<|eom_id|>") if v31 else ("<|eot_id|>",)
        self.tools = v31
        self._v31 = v31
        self._date = date_string

    def render(self, messages: Sequence[Message], tools: Optional[list[Any]], bos: bool) -> str:
        out = ["<|begin_of_text|>"] if bos else []
        start = 0
        if self._v31:
            system = ""
            if messages and messages[0].role == "system":
                system, start = messages[0].content.strip(), 1
            out.append("<|start_header_id|>system<|end_header_id|>\n\n")
            if tools:
                out.append("Environment: ipython\n")
            out.append(f"Cutting Knowledge Date: December 2023\nToday Date: {self._date}\n\n")
            out.append(system + "<|eot_id|>")
            if tools:
                if start >= len(messages) or messages[start].role != "user":
                    raise invalid("With tools, the llama3.1 template puts them in the first user "
                                  "message, so a user message must follow the system message.",
                                  f"messages[{start}]", "invalid_value")
                out.append("<|start_header_id|>user<|end_header_id|>\n\n" + self._TOOL_PROMPT)
                out.extend(_tool_json(tool, 4) + "\n\n" for tool in tools)
                out.append(messages[start].content.strip() + "<|eot_id|>")
                start += 1
        for index in range(start, len(messages)):
            message = messages[index]
            if message.tool_calls:
                if len(message.tool_calls) != 1:
                    raise invalid("The llama3.1 template renders one tool call per assistant "
                                  "message.", f"messages[{index}].tool_calls", "invalid_value")
                call = message.tool_calls[0]
                out.append('<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "'
                           + call.name + '", "parameters": ' + _tool_json(call.arguments)
                           + "}<|eot_id|>")
            elif message.role == "tool" and self._v31:
                out.append("<|start_header_id|>ipython<|end_header_id|>\n\n"
                           + message.content + "<|eot_id|>")
            else:
                out.append("<|start_header_id|>" + message.role + "<|end_header_id|>\n\n"
                           + message.content.strip() + "<|eot_id|>")
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        return "".join(out)


def _fold_system(messages: Sequence[Message], name: str) -> tuple[str, int]:
    """Leading system messages, joined: Mistral and Gemma put them before the first user text."""
    parts = []
    index = 0
    while index < len(messages) and messages[index].role == "system":
        parts.append(messages[index].content)
        index += 1
    if index == len(messages):
        raise invalid(f"The {name} template needs at least one user message.", "messages",
                      "invalid_value")
    return ("\n\n".join(parts) + "\n\n" if parts else ""), index


def _alternate(messages: Sequence[Message], start: int, name: str) -> None:
    for index in range(start, len(messages)):
        expected = "user" if (index - start) % 2 == 0 else "assistant"
        if messages[index].role != expected:
            raise invalid(f"The {name} template needs user and assistant messages to alternate, "
                          "starting with user (system messages only at the start); message "
                          f"{index} should be {expected}.", f"messages[{index}].role",
                          "invalid_value")


class Mistral(Template):
    """Mistral ``[INST]`` layouts: V1 / V3 (sentencepiece) and V3-Tekken spacing."""

    _LAYOUTS: ClassVar[dict[str, tuple[str, str, str]]] = {
        # (before user text, after user text, before assistant text)
        "v1": (" [INST] ", " [/INST]", " "),
        "v3": ("[INST] ", "[/INST]", " "),
        "tekken": ("[INST]", "[/INST]", ""),
    }

    def __init__(self, variant: str) -> None:
        self.name = "mistral-" + variant
        self.bos_token = "<s>"
        self.end_markers = ("</s>",)
        self.tool_role = False
        self._open, self._close, self._reply = self._LAYOUTS[variant]

    def render(self, messages: Sequence[Message], tools: Optional[list[Any]], bos: bool) -> str:
        system, start = _fold_system(messages, self.name)
        _alternate(messages, start, self.name)
        if messages[-1].role != "user":
            raise invalid(f"The {self.name} template needs the last message to be a user "
                          "message.", f"messages[{len(messages) - 1}].role", "invalid_value")
        out = ["<s>"] if bos else []
        for index in range(start, len(messages)):
            message = messages[index]
            if message.role == "user":
                text = system + message.content if index == start else message.content
                opener = self._open if bos or index != start else self._open.lstrip(" ")
                out.append(opener + text + self._close)
            else:
                out.append(self._reply + message.content + "</s>")
        return "".join(out)


class ChatML(Template):
    """``<|im_start|>role\\ntext<|im_end|>\\n`` (no BOS); roles rendered as given."""

    name = "chatml"
    end_markers = ("<|im_end|>",)

    def render(self, messages: Sequence[Message], tools: Optional[list[Any]], bos: bool) -> str:
        out = ["<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n" for m in messages]
        out.append("<|im_start|>assistant\n")
        return "".join(out)


class Gemma(Template):
    """Gemma: user/model turns only; system text folded into the first user turn."""

    name = "gemma"
    bos_token = "<bos>"
    end_markers = ("<end_of_turn>",)
    tool_role = False

    def render(self, messages: Sequence[Message], tools: Optional[list[Any]], bos: bool) -> str:
        system, start = _fold_system(messages, self.name)
        _alternate(messages, start, self.name)
        out = ["<bos>"] if bos else []
        for index in range(start, len(messages)):
            message = messages[index]
            if message.role == "user":
                prefix = system if index == start else ""
                out.append("<start_of_turn>user\n" + prefix + message.content.strip()
                           + "<end_of_turn>\n")
            else:
                out.append("<start_of_turn>model\n" + message.content.strip() + "<end_of_turn>\n")
        out.append("<start_of_turn>model\n")
        return "".join(out)


def build_template(name: str, *, mistral_variant: str, chat_template: Optional[str],
                   bos_token: str, eos_token: str, date_string: str, max_chars: int,
                   timeout_ms: int) -> Template:
    """The renderer for a validated conf (names checked by the conf parser)."""
    if chat_template is not None:
        # Imported here: Jinja2 adds ~5 MB to every runner process, and most routes use a
        # named template.
        from .jinja_template import JinjaTemplate

        return JinjaTemplate(chat_template, bos_token, eos_token, date_string, max_chars,
                             timeout_ms)
    if name in ("llama3", "llama3.1"):
        return Llama3(name == "llama3.1", date_string)
    if name == "mistral":
        return Mistral(mistral_variant)
    if name.startswith("mistral-"):
        return Mistral(name.removeprefix("mistral-"))
    if name == "chatml":
        return ChatML()
    if name == "gemma":
        return Gemma()
    raise ValueError(f"unknown template {name!r}")
