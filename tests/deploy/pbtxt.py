"""A small reader for protobuf text format (Triton's config.pbtxt), enough for model configs.

Every field maps to a list of its values (fields repeat, and ``[a, b]`` is the same as giving
the field twice); a nested message is a dict of the same shape.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"#]+')
_INT = re.compile(r"[-+]?\d+")
Message = dict[str, list[Any]]


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"unexpected character {text[pos]!r} at offset {pos}")
        token = match.group()
        if not token.isspace() and not token.startswith("#"):
            out.append(token)
        pos = match.end()
    return out


def _scalar(token: str) -> Any:
    if token.startswith('"'):
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if token in ("true", "True"):
        return True
    if token in ("false", "False"):
        return False
    if _INT.fullmatch(token):
        return int(token)
    return token


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ""

    def take(self, expected: str = "") -> str:
        token = self.peek()
        if not token or (expected and token != expected):
            raise ValueError(f"expected {expected or 'a token'}, got {token or 'end of input'!r}")
        self.pos += 1
        return token

    def message(self, closing: str) -> Message:
        fields: Message = {}
        while self.peek() != closing:
            name = self.take()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"expected a field name, got {name!r}")
            if self.peek() == ":":
                self.take(":")
            fields.setdefault(name, []).extend(self.values())
        return fields

    def values(self) -> list[Any]:
        if self.peek() != "[":
            return [self.value()]
        self.take("[")
        items: list[Any] = []
        while self.peek() != "]":
            items.append(self.value())
            if self.peek() == ",":
                self.take(",")
        self.take("]")
        return items

    def value(self) -> Any:
        if self.peek() == "{":
            self.take("{")
            nested = self.message("}")
            self.take("}")
            return nested
        token = self.take()
        if token in "{}[]:,":
            raise ValueError(f"unexpected {token!r}")
        return _scalar(token)


def parse(text: str) -> Message:
    parser = _Parser(text)
    return parser.message("")


def one(message: Message, name: str, default: Any = None) -> Any:
    """The single value of a non-repeated field."""
    values = message.get(name, [])
    if len(values) > 1:
        raise ValueError(f"field {name!r} given {len(values)} times")
    return values[0] if values else default
