"""Plugin discovery: specs, classes or instances, name clashes, broken sources."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from apisix_openai_triton.runner import Plugin
from apisix_openai_triton.runner.registry import PluginLoadError, PluginRegistry, load_spec


class First(Plugin[Any]):
    name = "same"


class Second(Plugin[Any]):
    name = "same"


INSTANCE = First()


def test_spec_may_name_a_class_or_an_instance() -> None:
    assert isinstance(load_spec(f"{__name__}:First"), First)
    assert load_spec(f"{__name__}:INSTANCE") is INSTANCE


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "module:attr"),
    ("no_such_module_xyz:X", "cannot import"),
    (f"{__name__}:Missing", "no attribute"),
    (f"{__name__}:pytest", "neither a Plugin"),
    ("apisix_openai_triton.runner:Plugin", "no name"),
])
def test_bad_specs_say_why(spec: str, message: str) -> None:
    with pytest.raises(PluginLoadError, match=message):
        load_spec(spec)


def test_later_source_wins_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="apisix_openai_triton")
    registry = PluginRegistry()
    registry.load_specs([f"{__name__}:First", f"{__name__}:Second"])
    assert isinstance(registry.get("same"), Second)
    assert any("replaces" in r.getMessage() for r in caplog.records)


def test_broken_builtin_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="apisix_openai_triton")
    registry = PluginRegistry()
    registry.load_builtins(["no_such_module_xyz:Plugin", f"{__name__}:First"])
    assert list(registry) and registry.get("same") is not None
    assert any("no_such_module_xyz" in r.getMessage() for r in caplog.records)


def test_installed_entry_points_are_found_once() -> None:
    registry = PluginRegistry.discover()
    names = [p.name for p in registry]
    assert len(names) == len(set(names))
    assert {"openai-to-triton", "triton-to-openai"} <= set(names)
