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
from collections.abc import Mapping
from typing import Any

from rlvr.registry import Registry
from verifiers.base import BatchStats, Verdict, Verifier

_registry: Registry[type[Verifier]] = Registry("verifier", package="verifiers", entry_point_group="rlvr.verifiers")
register = _registry.register


def get(name: str, **options: Any) -> Verifier:
    """A new verifier instance of the registered class ``name``, built with ``options``."""
    return _registry.get(name)(**options)


def get_accepting(name: str, own: Mapping[str, Any] | None = None, /, **shared: Any) -> Verifier:
    """Like :func:`get`, passing only the ``shared`` options the verifier's constructor accepts: callers with
    settings for several kinds of verifier (time limit, sandbox, ...) give them all at once. ``own`` are
    options meant for this verifier alone: each must be one it accepts (see :func:`check_options`)."""
    cls = _registry.get(name)
    check_options(name, own or {})
    accepted = inspect.signature(cls).parameters
    return cls(**{key: value for key, value in shared.items() if key in accepted}, **(own or {}))


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the valid options when the verifier ``name`` does not take one of ``options``."""
    parameters = inspect.signature(_registry.get(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(
            f"verifier {name!r} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(parameters)}"
        )


def available() -> list[str]:
    """Names of every registered verifier."""
    return _registry.available()


__all__ = ["BatchStats", "Verdict", "Verifier", "available", "check_options", "get", "get_accepting", "register"]
