"""A lazy name → module registry: the one lookup behind ``perfsanity.engines`` and ``perfsanity.load``.

A :class:`LazyRegistry` maps a name (``metadata.backend``, ``benchmark.client``) to the dotted path of
the module that implements it and the module-level attribute that holds the implementation
(``BACKEND``, ``CLIENT``). Modules are imported on first lookup only, so asking for one backend never
imports the others (or their optional dependencies). An unknown name is a :class:`ValueError` that
names the kind and lists the known names, in registry order.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    """``kind`` names the thing in errors ("backend", "client"); ``attr`` is the module attribute."""

    def __init__(self, kind: str, attr: str, modules: Mapping[str, str]) -> None:
        self.kind = kind
        self.attr = attr
        self._modules = dict(modules)

    def get(self, name: str) -> T:
        """The ``attr`` object of the module registered for ``name``."""
        try:
            module = importlib.import_module(self._modules[name])
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._modules)}") from None
        obj: T = getattr(module, self.attr)
        return obj

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registry order."""
        return tuple(self._modules)
