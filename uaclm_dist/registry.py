"""One small registry type for every extension point (objectives, model families, scores,
metrics, data formats).

    OBJECTIVES: Registry[Objective] = Registry("objective")
    OBJECTIVES.register(UaClmObjective())      # one line next to the class, in its own file
    OBJECTIVES.get("ua_clm")                   # KeyError naming the valid choices on a typo

An entry is registered once, under its ``name`` attribute (or an explicit name). Registering a
second entry under a taken name is an error, so two extensions cannot silently shadow each other;
``replace=True`` is for tests that swap an entry on purpose.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError"]


class UnknownNameError(KeyError):
    """A name that is not registered; ``str()`` lists the choices and the closest match."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> entry, in registration order.

    Args:
        kind: what the entries are, for messages ("objective", "score", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, entry: T, *, name: str | None = None, replace: bool = False) -> T:
        """Add ``entry`` under ``name`` (default: ``entry.name``); returns the entry, so it can
        be used as a decorator on classes that carry a ``name``."""
        key = name if name is not None else getattr(entry, "name", None)
        if not isinstance(key, str) or not key:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {key!r}")
        if key in self._entries and not replace:
            raise ValueError(f"{self.kind} {key!r} is already registered")
        self._entries[key] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a temporary entry clean up with this)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry registered as ``name``; :class:`UnknownNameError` otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """"unknown objective 'x' (choose from: ...; did you mean 'y'?)"."""
        choices = ", ".join(self._entries) or "none registered"
        message = f"unknown {self.kind} {name!r} (choose from: {choices}"
        close = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.5)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return message + ")"

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())
