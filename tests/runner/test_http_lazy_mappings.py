"""``MultiDict.lazy``: the gateway's entries are decoded only when a plugin reads them."""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apisix_openai_triton.runner.http import Args, Headers
from apisix_openai_triton.runner.plugin import Request
from apisix_openai_triton.runner.protocol import messages as m
from apisix_openai_triton.runner.protocol.codec import decode_to_runner, encode_to_runner

Entry = tuple[str, Optional[str]]


def _never() -> list[Entry]:
    raise AssertionError("the original entries were read")


def test_set_delete_and_getall_of_replaced_names_never_read_the_source() -> None:
    h = Headers.lazy(_never)
    h["Content-Type"] = "application/json"
    h.set("x-state", "s")
    h.add("x-state", "t")
    h.delete("authorization")
    assert h.getall("content-type") == ["application/json"]
    assert h.getall("X-State") == ["s", "t"]
    assert h.getall("authorization") == []
    assert h.touched() == ["content-type", "x-state", "authorization"]
    assert h.changed


def test_a_read_loads_the_originals_in_front_of_the_writes() -> None:
    loads = []

    def source() -> list[Entry]:
        loads.append(1)
        return [("Host", "a"), ("X-State", "forged"), ("Accept", "*/*"), ("accept", "x/y")]

    h = Headers.lazy(source)
    h["x-state"] = "signed"
    h.add("accept", "text/plain")
    assert not loads
    assert h["host"] == "a"
    assert h.multi_items() == [("host", "a"), ("accept", "*/*"), ("accept", "x/y"),
                               ("x-state", "signed"), ("accept", "text/plain")]
    assert h.getall("accept") == ["*/*", "x/y", "text/plain"]
    assert "HOST" in h and len(h) == 3
    assert loads == [1]


_names = st.sampled_from(["a", "A", "b", "c"])
_values = st.one_of(st.none(), st.sampled_from(["1", "2", "3"]))
_ops = st.lists(st.tuples(st.sampled_from(["set", "add", "delete", "getall"]), _names, _values),
                max_size=12)


@given(st.lists(st.tuples(_names, _values), max_size=6), _ops, st.booleans())
def test_lazy_mapping_behaves_exactly_like_the_eager_one(
    original: list[Entry], ops: list[tuple[str, str, Optional[str]]], headers: bool
) -> None:
    kind = Headers if headers else Args
    eager = kind(original)
    lazy = kind.lazy(lambda: list(original))
    for op, name, value in ops:
        if op == "set":
            eager.set(name, value)
            lazy.set(name, value)
        elif op == "add":
            eager.add(name, value)
            lazy.add(name, value)
        elif op == "delete":
            eager.delete(name)
            lazy.delete(name)
        else:
            assert lazy.getall(name) == eager.getall(name)
    assert lazy.touched() == eager.touched()
    assert [lazy.getall(n) for n in lazy.touched()] == [eager.getall(n) for n in eager.touched()]
    assert lazy.multi_items() == eager.multi_items()


async def _no_questions(info: m.Info) -> Optional[bytes]:
    raise AssertionError(f"asked {info!r}")


def test_a_request_that_only_sets_headers_rewrites_without_decoding_them() -> None:
    frame = encode_to_runner(m.HTTPReqCallRequest(
        7, 1, 2, "/v1/chat/completions", b"\x7f\0\0\1", [],
        [("host", "h"), ("x-openai-triton-state", "forged"), ("content-type", "text/plain")],
    ))
    call = decode_to_runner(int(m.MessageType.HTTP_REQ_CALL), frame[4:], True)
    assert isinstance(call, m.HTTPReqCallRequest)
    request = Request(call, _no_questions)
    request.headers["content-type"] = "application/json"
    request.headers["x-openai-triton-state"] = "signed"
    action = request.to_action()
    assert isinstance(action, m.Rewrite)
    assert action.headers == [("content-type", "application/json"),
                              ("x-openai-triton-state", "signed")]
    with pytest.raises(AttributeError):  # the lazy codec has not decoded the headers
        m.HTTPReqCallRequest.__dict__["headers"].__get__(call)
    # Reading afterwards still sees the gateway's other headers, and the plugin's writes.
    assert request.headers["host"] == "h"
    assert request.headers.getall("x-openai-triton-state") == ["signed"]


@given(st.lists(st.tuples(_names, _values), max_size=6), st.booleans())
def test_clear_touches_every_name_like_the_inherited_clear(
    original: list[Entry], lazy: bool
) -> None:
    mine = Headers.lazy(lambda: list(original)) if lazy else Headers(original)
    inherited = Headers(original)
    mine.clear()
    while True:  # what ``MutableMapping.clear`` does
        try:
            inherited.popitem()
        except KeyError:
            break
    assert mine.multi_items() == inherited.multi_items() == []
    assert mine.touched() == inherited.touched()
