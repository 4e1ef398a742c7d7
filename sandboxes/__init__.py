"""Sandboxes run untrusted programs (a model's code) under resource limits, isolated from the host.

    import sandboxes
    box = sandboxes.get()                          # "auto": bwrap where it works, else docker
    result = box.run("print(input()[::-1])", stdin="abc", timeout=5, memory_mb=256)
    result.status, result.stdout                   # ("ok", "cba\\n")

Back-ends are plug-ins registered by name (``bwrap``, ``docker``, ``subprocess``); add one with
a new module in this package::

    from sandboxes import register
    from sandboxes.base import Sandbox

    @register("firecracker")
    class Firecracker(Sandbox):
        def _execute(self, argv, files, stdin, limits): ...

Guarantees and limits of each back-end: the README's Sandboxes section.
"""

from __future__ import annotations

from typing import Any

from rlvr.registry import Registry
from sandboxes.base import LANGUAGES, STATUSES, ExecResult, Limits, Sandbox, SandboxError

_registry: Registry[type[Sandbox]] = Registry("sandbox", package="sandboxes", entry_point_group="rlvr.sandboxes")
register = _registry.register

# "auto" tries these in order; "subprocess" is never picked automatically because it does not isolate.
AUTO_ORDER = ("bwrap", "docker")


def get(name: str = "auto", **defaults: Any) -> Sandbox:
    """A sandbox of back-end ``name`` whose runs default to ``defaults`` (limits such as
    ``timeout=``, ``memory_mb=``, and back-end options such as docker's ``base_url=``)."""
    if name != "auto":
        return _registry.get(name)(**defaults)
    reasons = []
    for candidate in AUTO_ORDER:
        cls = _registry.get(candidate)
        reason = cls.unavailable_reason(**defaults)
        if reason is None:
            return cls(**defaults)
        reasons.append(f"{candidate}: {reason}")
    raise SandboxError(
        "no isolating sandbox works here (" + "; ".join(reasons) + "). Install bubblewrap, or point the docker "
        "back-end at a Docker host (base_url= or DOCKER_HOST); for trusted code only, use sandboxes.get('subprocess')."
    )


def unavailable_reason(name: str, **options: Any) -> str | None:
    """Why back-end ``name`` cannot run on this machine, or None if it can."""
    return _registry.get(name).unavailable_reason(**options)


def available() -> list[str]:
    """Names of every registered back-end (whether or not it can run on this machine)."""
    return _registry.available()


__all__ = ["LANGUAGES", "STATUSES", "ExecResult", "Limits", "Sandbox", "SandboxError", "available", "get", "register",
           "unavailable_reason"]
