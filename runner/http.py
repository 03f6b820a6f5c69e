"""Multi-value header and argument mappings that remember what a plugin changed.

The gateway sends one entry per value, and a Rewrite must carry only what changed: echoing every
header back collapses multi-value headers and costs the gateway work on every request. So these
mappings keep every value in arrival order and record which names were touched; the runner turns
the touched names, and only those, into Rewrite entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Optional, TypeVar, overload

_T = TypeVar("_T")


class MultiDict(MutableMapping[str, str]):
    """An ordered multi-value mapping with change tracking.

    ``m[name]`` is the first value, ``m.getall(name)`` every value; ``m[name] = v`` replaces all
    values, ``m.add(name, v)`` appends one, ``del m[name]`` removes all. Iteration yields each
    name once, in order of first appearance. A value may be ``None`` (an argument given without
    a value); ``m[name]`` then returns ``""``.
    """

    __slots__ = ("_items", "_touched")

    def __init__(self, items: Iterable[tuple[str, Optional[str]]] = ()) -> None:
        fold = self._fold
        self._items: list[tuple[str, Optional[str]]] = [(fold(k), v) for k, v in items]
        self._touched: dict[str, None] = {}

    @staticmethod
    def _fold(name: str) -> str:
        return name

    # --- reading ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> str:
        key = self._fold(name)
        for k, v in self._items:
            if k == key:
                return "" if v is None else v
        raise KeyError(name)

    @overload
    def get(self, name: str) -> Optional[str]: ...
    @overload
    def get(self, name: str, default: _T) -> str | _T: ...
    def get(self, name: str, default: object = None) -> object:
        try:
            return self[name]
        except KeyError:
            return default

    def getall(self, name: str) -> list[Optional[str]]:
        """Every value of ``name`` in arrival order (``None`` for a value-less entry)."""
        key = self._fold(name)
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, Optional[str]]]:
        """Every ``(name, value)`` pair, names folded, in order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self._fold(name)
        return any(k == key for k, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._items))

    def __len__(self) -> int:
        return len(dict.fromkeys(k for k, _ in self._items))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"

    # --- writing ---------------------------------------------------------------------------

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def set(self, name: str, value: Optional[str]) -> None:
        """Replace every value of ``name`` with one value."""
        key = self._fold(name)
        self._items = [(k, v) for k, v in self._items if k != key]
        self._items.append((key, value))
        self._touched[key] = None

    def add(self, name: str, value: Optional[str]) -> None:
        """Append one more value for ``name``, keeping the others."""
        key = self._fold(name)
        self._items.append((key, value))
        self._touched[key] = None

    def __delitem__(self, name: str) -> None:
        key = self._fold(name)
        if not any(k == key for k, _ in self._items):
            raise KeyError(name)
        self.delete(name)

    def delete(self, name: str) -> None:
        """Remove every value of ``name``; deleting an absent name still tells the gateway."""
        key = self._fold(name)
        self._items = [(k, v) for k, v in self._items if k != key]
        self._touched[key] = None

    # --- change tracking -------------------------------------------------------------------

    @property
    def changed(self) -> bool:
        return bool(self._touched)

    def touched(self) -> list[str]:
        """Names (folded) that a plugin set, added to or deleted, in order of first change."""
        return list(self._touched)


class Headers(MultiDict):
    """HTTP headers: names are case-insensitive and kept lower-cased, as the gateway sends them."""

    __slots__ = ()

    @staticmethod
    def _fold(name: str) -> str:
        return name.lower()


class Args(MultiDict):
    """Query arguments: names are case-sensitive; a flag argument has the value ``None``."""

    __slots__ = ()
