"""Rollout engines: sample grouped completions from the policy and take its new weights after each step.

Each engine is a module of this package registered by name::

    from rlvr.rollout import get

    with get("vllm")(model_path, max_model_len=2048) as engine:
        groups = engine.generate(prompt_token_ids, n=8, max_new_tokens=1024)

The interface is in :mod:`rlvr.rollout.base`.
"""

from __future__ import annotations

from rlvr.registry import Registry
from rlvr.rollout.base import Completion, RolloutEngine

__all__ = ["Completion", "RolloutEngine", "available", "get", "register"]

_engines: Registry[type[RolloutEngine]] = Registry(
    "rollout engine", package="rlvr.rollout", entry_point_group="rlvr.rollout"
)
register = _engines.register


def get(name: str) -> type[RolloutEngine]:
    """The engine class registered as ``name`` (``vllm``, ``hf``, or a plug-in)."""
    return _engines.get(name)


def available() -> list[str]:
    """Names of every registered rollout engine."""
    return _engines.available()
