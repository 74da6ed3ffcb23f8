"""One generic name → object registry: decorator registration, duplicates refused, helpful lookups."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from calmix.errors import CalmixError

T = TypeVar("T")


class UnknownName(CalmixError, KeyError):
    """A name that is not registered; the message lists the choices and the nearest match."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named objects of one kind (pruners, sources, tasks, ...), in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register obj under name; a name registered twice is a programming error."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of add: `@REG.register("name")`."""
        return lambda obj: self.add(name, obj)

    def remove(self, name: str) -> T:
        """Unregister name (plugins and tests that register temporary entries)."""
        return self._items.pop(name)

    def get(self, name: str) -> T:
        """The object called name; UnknownName listing the choices (and the nearest one) otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownName(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """'unknown <kind> 'x': choose one of a, b (did you mean 'b'?)'."""
        names = sorted(self._items)
        close = difflib.get_close_matches(str(name), names, n=1) if isinstance(name, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}: choose one of {', '.join(names)}"

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
