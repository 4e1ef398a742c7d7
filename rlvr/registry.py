"""One small registry pattern shared by every kind of plug-in.

Verifiers, sandbox back-ends, task loaders, rollout engines, advantage estimators and policy-loss
aggregations all register themselves by name with a decorator::

    from verifiers import register

    @register("my-checker")
    class MyChecker(Verifier): ...

Adding a plug-in is a new module in the owning package plus that decorator: the registry imports
every module of its package the first time a name is looked up, and also loads third-party
plug-ins advertised under a Python entry-point group (``[project.entry-points."rlvr.verifiers"]``
in another package's ``pyproject.toml``).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """A name that is not registered, or registered twice."""


class Registry(Generic[T]):
    """Maps names to plug-in objects (usually classes or functions) of one kind."""

    def __init__(self, kind: str, package: str | None = None, entry_point_group: str | None = None):
        self.kind = kind
        self._package = package
        self._entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` on a class or function."""

        def decorate(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj and _qualname(existing) != _qualname(obj):
                raise RegistryError(
                    f"{self.kind} {name!r} is registered twice: by {_qualname(existing)} and "
                    f"{_qualname(obj)}; give one of them another name"
                )
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The object registered as ``name``; an error lists the valid names."""
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(self._unknown_message(name)) from None

    def available(self) -> list[str]:
        """Every registered name, sorted."""
        self._discover()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._items

    def _unknown_message(self, name: str) -> str:
        names = sorted(self._items)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(names) or '(none)'}."

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self._package is not None:
            package = importlib.import_module(self._package)
            for module in pkgutil.iter_modules(package.__path__):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{self._package}.{module.name}")
        if self._entry_point_group is not None:
            for entry_point in importlib.metadata.entry_points(group=self._entry_point_group):
                obj = entry_point.load()
                if entry_point.name not in self._items:
                    self._items[entry_point.name] = obj


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
