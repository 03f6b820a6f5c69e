"""Chat templates: the conversation rendered into the exact prompt text the model was tuned on.

The named templates are plain Python (they run on every request and must be fast); their
layouts follow the facts sheet (section 9) to the character. A Hugging Face ``chat_template``
string from the conf is compiled once, in Jinja2's immutable sandbox (no Python attribute
access, no mutation of the values it is given), with an output size limit and a render time
limit checked at every output chunk, attribute or item access, call and ``*``/``**`` operation.
The time limit is cooperative: a loop that touches none of these runs to its end. The template
is route configuration written by the gateway operator, never by a client.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Optional

from jinja2 import nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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


class _RenderLimit(Exception):
    """The render ran past its time or size budget."""


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus cooperative time and size checks."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, max_chars: int) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True,
                         extensions=["jinja2.ext.loopcontrols"])
        self.max_chars = max_chars
        self._local = threading.local()
        self.filters["tojson"] = self._tojson
        self.filters["_budgeted"] = _budgeted
        self.globals["raise_exception"] = self._raise
        self.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))

    @staticmethod
    def _tojson(value: Any, indent: Optional[int] = None, separators: Any = None,
                sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    @staticmethod
    def _raise(message: object) -> None:
        raise TemplateError(str(message))

    def start(self, seconds: float) -> float:
        deadline = time.perf_counter() + seconds
        self._local.deadline = deadline
        return deadline

    def check(self) -> None:
        if time.perf_counter() > getattr(self._local, "deadline", 0.0):
            raise _RenderLimit("time")

    def _parse(self, source: str, name: Optional[str], filename: Optional[str]) -> nodes.Template:
        # Every ``for`` iterates through ``_budgeted``, so nested loops over a local variable
        # with an empty body (no call, attribute or output to check at) are bounded too.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_budgeted", [], [], None, None,
                                     lineno=loop.iter.lineno).set_environment(self)
        return tree

    def _sized(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple, dict)) and len(value) > self.max_chars:
            raise _RenderLimit("size")
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.check()
        return self._sized(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.check()
        return self._sized(super().getitem(obj, argument))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self.check()
        return __self._sized(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.check()
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise _RenderLimit("size")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > self.max_chars:
                    raise _RenderLimit("size")
        return super().call_binop(context, operator, left, right)


@pass_context  # never folded into a constant at compile time: a loop may run many times
def _budgeted(context: Any, iterable: Any) -> Any:
    """The loop's items, with the render budget checked every 256 of them."""
    check = context.environment.check
    for count, item in enumerate(iterable):
        if not count & 255:
            check()
        yield item


class JinjaTemplate(Template):
    """A Hugging Face ``chat_template``, compiled once per conf."""

    tools = True

    def __init__(self, source: str, bos_token: str, eos_token: str, date_string: str,
                 max_chars: int, timeout_ms: int) -> None:
        self.name = "chat_template"
        self.bos_token = bos_token
        self.end_markers = (eos_token,) if eos_token else ()
        self._env = _LimitedEnvironment(max_chars)
        self._template = self._env.from_string(source)
        self._static = {"bos_token": bos_token, "eos_token": eos_token,
                        "date_string": date_string, "add_generation_prompt": True}
        self._max_chars = max_chars
        self._seconds = timeout_ms / 1000

    @staticmethod
    def _message(message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.name is not None:
            out["name"] = message.name
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls
            ]
        if message.tool_call_id is not None:
            out["tool_call_id"] = message.tool_call_id
        return out

    def render(self, messages: Sequence[Message], tools: Optional[list[Any]], bos: bool) -> str:
        env = self._env
        context = dict(self._static, messages=[self._message(m) for m in messages], tools=tools)
        deadline = env.start(self._seconds)
        chunks = []
        size = 0
        try:
            for chunk in self._template.generate(context):
                size += len(chunk)
                if size > self._max_chars:
                    raise too_long(size, self._max_chars)
                if time.perf_counter() > deadline:
                    raise _RenderLimit("time")
                chunks.append(chunk)
        except _RenderLimit as exc:
            if str(exc) == "size":
                raise too_long(size, self._max_chars) from None
            raise invalid(f"The chat template did not finish within {self._seconds * 1000:g} ms "
                          "for this conversation.", "messages", "template_timeout") from None
        except (TemplateError, SecurityError) as exc:
            raise invalid(f"The chat template refused this conversation: {str(exc)[:300]}",
                          "messages", "template_error") from None
        except OpenAIError:
            raise
        except Exception as exc:  # a template bug must not become a runner error
            raise invalid(f"The chat template failed on this conversation "
                          f"({type(exc).__name__}).", "messages", "template_error") from None
        prompt = "".join(chunks)
        if not bos and self.bos_token and prompt.startswith(self.bos_token):
            prompt = prompt[len(self.bos_token):]
        return prompt


def build_template(name: str, *, mistral_variant: str, chat_template: Optional[str],
                   bos_token: str, eos_token: str, date_string: str, max_chars: int,
                   timeout_ms: int) -> Template:
    """The renderer for a validated conf (names checked by the conf parser)."""
    if chat_template is not None:
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
