"""Headers and Args: multi-value, case rules, and the change log that becomes a Rewrite."""

from __future__ import annotations

import pytest

from apisix_openai_triton.runner.http import Args, Headers


def test_headers_are_case_insensitive_and_keep_every_value_in_order() -> None:
    h = Headers([("X-Multi", "one"), ("x-multi", "two"), ("Host", "a")])
    assert h["X-MULTI"] == "one"
    assert h.getall("x-multi") == ["one", "two"]
    assert list(h) == ["x-multi", "host"]
    assert len(h) == 2
    assert "HOST" in h and "nope" not in h and 3 not in h
    assert not h.changed


def test_args_are_case_sensitive_and_flags_have_no_value() -> None:
    a = Args([("a", "1"), ("A", "2"), ("flag", None)])
    assert a.getall("a") == ["1"]
    assert a["flag"] == ""
    assert a.getall("flag") == [None]
    assert a.get("missing") is None
    assert a.get("missing", "d") == "d"


def test_set_add_delete_record_touched_names_once_in_order() -> None:
    h = Headers([("a", "1"), ("b", "2"), ("b", "3")])
    h["B"] = "x"
    h.add("c", "y")
    h.add("C", "z")
    del h["a"]
    assert h.multi_items() == [("b", "x"), ("c", "y"), ("c", "z")]
    assert h.touched() == ["b", "c", "a"]
    assert h.changed


def test_deleting_an_absent_name_raises_keyerror_but_delete_records_it() -> None:
    h = Headers()
    with pytest.raises(KeyError):
        del h["nope"]
    assert not h.changed
    h.delete("nope")
    assert h.touched() == ["nope"]


def test_missing_key_raises() -> None:
    with pytest.raises(KeyError):
        Headers()["x"]
