"""A Hugging Face ``chat_template`` from the conf, compiled once in a limited Jinja2 sandbox.

Jinja2's immutable sandbox (no Python attribute access, no mutation of the values it is given),
with an output size limit and a render time limit checked at every output chunk, attribute or
item access, call and ``*``/``**`` operation, and every 256 iterations of any loop. The time
limit is cooperative: a loop that touches none of these runs to its end. The template is route
configuration written by the gateway operator, never by a client.

A module of its own so that Jinja2 is imported only by a runner that has a conf with a
``chat_template`` (``templates.build_template`` imports it then).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Optional

from jinja2 import nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .chat_request import Message
from .errors import OpenAIError, invalid
from .templates import Template, too_long


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
