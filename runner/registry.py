"""Which plugins this runner serves, by the name a route's conf uses.

Three sources, loaded in this order so that the more explicit one wins a name clash: the
built-in plugins, the ``apisix_openai_triton.plugins`` entry-point group (third-party packages),
then ``module:attr`` specs from the config file and ``--plugin``. A built-in or entry point that
fails to import is logged and skipped, so one broken package cannot keep the runner from
starting; a spec the operator named explicitly that fails is an error (``PluginLoadError``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from typing import Any, Optional

from .plugin import Plugin

log = logging.getLogger("apisix_openai_triton.runner.registry")

ENTRY_POINT_GROUP = "apisix_openai_triton.plugins"
BUILTIN_PLUGINS: tuple[str, ...] = (
    "apisix_openai_triton.plugins.openai_to_triton:OpenAIToTriton",
    "apisix_openai_triton.plugins.triton_to_openai:TritonToOpenAI",
)


class PluginLoadError(Exception):
    """An explicitly requested plugin spec could not be loaded; the message says why."""


def load_spec(spec: str) -> Plugin[Any]:
    """Import ``module:attr`` (attr may be dotted) and return a plugin instance.

    The attr may be a ``Plugin`` subclass (instantiated with no arguments) or an instance.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PluginLoadError(f"plugin spec {spec!r} is not of the form module:attr")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginLoadError(f"cannot import {module_name!r} for plugin {spec!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginLoadError(f"plugin {spec!r}: {module_name} has no attribute {attr!r}") from None
    if isinstance(obj, type) and issubclass(obj, Plugin):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginLoadError(f"plugin {spec!r}: instantiating it failed: {exc}") from exc
    if not isinstance(obj, Plugin):
        raise PluginLoadError(f"plugin {spec!r} is neither a Plugin subclass nor a Plugin instance")
    if not obj.name:
        raise PluginLoadError(f"plugin {spec!r} has no name (set the class attribute `name`)")
    return obj


class PluginRegistry:
    """Plugin name -> instance, with where each came from (for logs and ``plugins``)."""

    def __init__(self) -> None:
        self._plugins: dict[str, Plugin[Any]] = {}
        self._sources: dict[str, str] = {}

    def get(self, name: str) -> Optional[Plugin[Any]]:
        return self._plugins.get(name)

    def source(self, name: str) -> str:
        return self._sources[name]

    def __iter__(self) -> Iterator[Plugin[Any]]:
        return iter(self._plugins.values())

    def __len__(self) -> int:
        return len(self._plugins)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def add(self, plugin: Plugin[Any], source: str = "") -> None:
        """Register ``plugin`` under its name; a later registration replaces an earlier one."""
        name = plugin.name
        if not name:
            raise PluginLoadError(f"plugin {plugin!r} has no name")
        old = self._plugins.get(name)
        if old is not None and type(old) is not type(plugin):
            log.warning(
                "plugin %r from %s replaces the one from %s", name, source or "code",
                self._sources[name],
            )
        self._plugins[name] = plugin
        self._sources[name] = source or f"{type(plugin).__module__}:{type(plugin).__qualname__}"

    def _loaded(self, spec: str) -> bool:
        return spec in self._sources.values()

    def load_builtins(self, specs: Iterable[str] = BUILTIN_PLUGINS) -> None:
        for spec in specs:
            try:
                self.add(load_spec(spec), spec)
            except PluginLoadError as exc:
                log.error("built-in plugin not available: %s", exc)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        for ep in entry_points(group=group):
            if self._loaded(ep.value):
                continue  # a built-in also declared as an entry point: already here
            try:
                plugin = load_spec(ep.value)
            except PluginLoadError as exc:
                log.error("entry point %r in group %s skipped: %s", ep.name, group, exc)
                continue
            if plugin.name != ep.name:
                log.warning("entry point %r loads a plugin named %r", ep.name, plugin.name)
            self.add(plugin, ep.value)

    def load_specs(self, specs: Iterable[str]) -> None:
        """Load operator-named specs; raises ``PluginLoadError`` on the first that fails."""
        for spec in specs:
            self.add(load_spec(spec), spec)

    @classmethod
    def discover(cls, specs: Iterable[str] = (), *, builtins: bool = True,
                 installed: bool = True) -> "PluginRegistry":
        """Every source in precedence order; raises ``PluginLoadError`` for a bad spec."""
        registry = cls()
        if builtins:
            registry.load_builtins()
        if installed:
            registry.load_entry_points()
        registry.load_specs(specs)
        return registry
