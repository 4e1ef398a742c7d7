"""Verifiers turn a model's completion and a reference into a reward.

    import verifiers
    checker = verifiers.get("math")
    checker.verify("... so the answer is \\boxed{1/2}", "0.5").correct   # True

Add one with a new module in this package (or an entry point in the group ``rlvr.verifiers``)::

    from verifiers import Verdict, Verifier, register

    @register("exact")
    class Exact(Verifier):
        def verify(self, completion, reference):
            ok = completion.strip() == reference.strip()
            return Verdict(reward=float(ok), correct=ok, extracted=completion.strip(),
                           reason="correct" if ok else "wrong")
"""

from __future__ import annotations

import inspect
from typing import Any

from rlvr.registry import Registry
from verifiers.base import BatchStats, Verdict, Verifier

_registry: Registry[type[Verifier]] = Registry("verifier", package="verifiers", entry_point_group="rlvr.verifiers")
register = _registry.register


def get(name: str, **options: Any) -> Verifier:
    """A new verifier instance of the registered class ``name``, built with ``options``."""
    return _registry.get(name)(**options)


def get_accepting(name: str, **options: Any) -> Verifier:
    """Like :func:`get`, passing only the options the verifier's constructor accepts: callers with
    settings for several kinds of verifier (time limit, sandbox, ...) give them all at once."""
    cls = _registry.get(name)
    accepted = inspect.signature(cls).parameters
    return cls(**{key: value for key, value in options.items() if key in accepted})


def available() -> list[str]:
    """Names of every registered verifier."""
    return _registry.available()


__all__ = ["BatchStats", "Verdict", "Verifier", "available", "get", "get_accepting", "register"]
