"""Named concepts (attack kinds, backward estimators, defenses, models, data sets) and what the rest of
the code needs to know about each, registered in one place per concept.

A registry maps a name to its *facts* (plain data: defaults, constraints, what it applies to) and to its
*target*: the object that implements it, or a ``"package.module:attribute"`` string loaded on first use.
Facts are readable without importing the implementation, so the command line can check every flag before
it imports PyTorch. This module imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, overload

from spikeguard.errors import UserError

_T = TypeVar("_T")


@dataclass(frozen=True)
class Entry:
    """One registered name: its facts and how to reach its implementation."""

    name: str
    target: Any                       # the implementation, or "package.module:attribute"
    facts: Mapping[str, Any] = field(default_factory=dict)
    _loaded: list = field(default_factory=list, compare=False, repr=False)

    def __getattr__(self, key: str) -> Any:  # entry.default_model reads a fact
        facts = object.__getattribute__(self, "facts")
        if key in facts:
            return facts[key]
        raise AttributeError(f"{object.__getattribute__(self, 'name')!r} has no fact {key!r}")

    def load(self) -> Any:
        """The implementation (imported on first use when the target is a string)."""
        if not self._loaded:
            target = self.target
            if isinstance(target, str):
                module, _, attribute = target.partition(":")
                target = getattr(importlib.import_module(module), attribute)
            self._loaded.append(target)
        return self._loaded[0]


class Registry:
    """Names of one kind of concept. ``kind`` words the errors ("unknown attack 'x'; choose from ...")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    @overload
    def register(self, name: str, target: None = None, *, replace: bool = False,
                 **facts: Any) -> Callable[[_T], _T]: ...

    @overload
    def register(self, name: str, target: Callable[..., Any] | str, *, replace: bool = False,
                 **facts: Any) -> Entry: ...

    def register(self, name: str, target: Any = None, *, replace: bool = False,
                 **facts: Any) -> Entry | Callable[[Any], Any]:
        """Register ``name``. With a target, returns the entry; without one, returns a decorator that
        registers the decorated object and gives it back unchanged (``@REGISTRY.register("name", ...)``)."""
        if target is None:
            def decorate(obj: Any) -> Any:
                self.register(name, obj, replace=replace, **facts)
                return obj
            return decorate
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} '{name}' is registered already")
        entry = Entry(name, target, MappingProxyType(dict(facts)))
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UserError(f"unknown {self.kind} {name!r}; choose from {', '.join(self._entries)}") from None

    def load(self, name: str) -> Any:
        return self.get(name).load()

    def __getitem__(self, name: str) -> Any:  # dict-style lookup of the implementation
        return self.load(name)

    def facts(self, name: str) -> Mapping[str, Any]:
        return self.get(name).facts

    def names(self, **where: Any) -> tuple[str, ...]:
        """Registered names in registration order; with ``where``, those whose facts match every item."""
        return tuple(n for n, e in self._entries.items()
                     if all(e.facts.get(k) == v for k, v in where.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def lazy_exports(namespace: dict, exports: Mapping[str, str], dynamic: Mapping[str, Callable[[], Any]] | None = None):
    """A package's ``__getattr__`` and ``__dir__`` (PEP 562): each public name in ``exports`` (name ->
    "package.module") is imported from its module on first use and kept; a ``dynamic`` name is computed
    afresh on every access (a list of registered names, which registrations change). Importing the package
    then imports nothing heavy."""
    package, dynamic = namespace["__name__"], dict(dynamic or {})

    def __getattr__(name: str) -> Any:
        if name in dynamic:
            return dynamic[name]()
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(exports[name]), name)
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports) | set(dynamic))

    return __getattr__, __dir__
