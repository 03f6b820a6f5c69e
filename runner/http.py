"""Multi-value header and argument mappings that remember what a plugin changed.

The gateway sends one entry per value, and a Rewrite must carry only what changed: echoing every
header back collapses multi-value headers and costs the gateway work on every request. So these
mappings keep every value in arrival order and record which names were touched; the runner turns
the touched names, and only those, into Rewrite entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Optional, TypeVar, overload

_T = TypeVar("_T")
_M = TypeVar("_M", bound="MultiDict")


class MultiDict(MutableMapping[str, str]):
    """An ordered multi-value mapping with change tracking.

    ``m[name]`` is the first value, ``m.getall(name)`` every value; ``m[name] = v`` replaces all
    values, ``m.add(name, v)`` appends one, ``del m[name]`` removes all. Iteration yields each
    name once, in order of first appearance. A value may be ``None`` (an argument given without
    a value); ``m[name]`` then returns ``""``.
    """

    __slots__ = ("_items", "_touched", "_source", "_replaced")

    def __init__(self, items: Iterable[tuple[str, Optional[str]]] = ()) -> None:
        fold = self._fold
        self._items: list[tuple[str, Optional[str]]] = [(fold(k), v) for k, v in items]
        self._touched: dict[str, None] = {}
        self._source: Optional[Callable[[], Iterable[tuple[str, Optional[str]]]]] = None
        self._replaced: dict[str, None] = {}

    @classmethod
    def lazy(cls: type[_M], source: Callable[[], Iterable[tuple[str, Optional[str]]]]) -> _M:
        """A mapping whose original entries are read from ``source`` only when something reads.

        A plugin that only sets or deletes names (the OpenAI request plugin sets two headers)
        never pays for decoding the gateway's entries: 9 headers cost ~13 us to decode, more
        than the rest of that plugin's header work. Until the first read, ``_items`` holds only
        what was written and ``_replaced`` the names whose original values a set or delete
        dropped; loading puts the surviving originals in front, which is the order the eager
        mapping would have.
        """
        mapping = cls()
        mapping._source = source
        return mapping

    def _load(self) -> None:
        source = self._source
        if source is None:
            return
        self._source = None
        fold = self._fold
        replaced = self._replaced
        original = [(fold(k), v) for k, v in source()]
        self._items = [e for e in original if e[0] not in replaced] + self._items

    @staticmethod
    def _fold(name: str) -> str:
        return name

    # --- reading ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> str:
        self._load()
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
        if key not in self._replaced:  # otherwise the original values are gone: no load
            self._load()
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, Optional[str]]]:
        """Every ``(name, value)`` pair, names folded, in order."""
        self._load()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._load()
        key = self._fold(name)
        return any(k == key for k, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(dict.fromkeys(k for k, _ in self._items))

    def __len__(self) -> int:
        self._load()
        return len(dict.fromkeys(k for k, _ in self._items))

    def __repr__(self) -> str:
        self._load()
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
        if self._source is not None:
            self._replaced[key] = None

    def add(self, name: str, value: Optional[str]) -> None:
        """Append one more value for ``name``, keeping the others."""
        key = self._fold(name)
        self._items.append((key, value))
        self._touched[key] = None

    def __delitem__(self, name: str) -> None:
        self._load()
        key = self._fold(name)
        if not any(k == key for k, _ in self._items):
            raise KeyError(name)
        self.delete(name)

    def delete(self, name: str) -> None:
        """Remove every value of ``name``; deleting an absent name still tells the gateway."""
        key = self._fold(name)
        self._items = [(k, v) for k, v in self._items if k != key]
        self._touched[key] = None
        if self._source is not None:
            self._replaced[key] = None

    def clear(self) -> None:
        """Remove every entry, each name counting as touched: one pass, where the inherited
        ``clear`` deletes one name at a time (each a scan of the list)."""
        self._load()
        touched = self._touched
        for key, _ in self._items:
            touched[key] = None
        self._items = []

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
