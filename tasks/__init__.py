"""Tasks: problems with checkable answers, from data sets (hub or local file) or generated.

    import tasks
    examples = tasks.load("math500", path="../shared/data/math500.jsonl", limit=8)
    examples[0].problem, examples[0].reference, examples[0].verifier      # text, "\\frac{14}{3}", "math"
    prompt = tasks.render_prompt(examples[0], tokenizer, template="auto")

Every task has a default source (usually a Hugging Face hub dataset, read through ``datasets``) and
also loads from a local jsonl / json / parquet file with ``path=``. ``tasks.load("jsonl", path=...,
problem_column="q", answer_column="a")`` reads your own data without code, ``"hf:ORG/NAME[:CONFIG]"``
any hub dataset. Add a task with a new module in this package::

    from tasks import DataTask, HubSource, register

    @register("my-set")
    def my_set() -> DataTask:
        return DataTask(kind="math", summary="...", verifier="math", convert=..., columns={...},
                        hub=HubSource("org/my-set", split="test"))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlvr.registry import Registry
from tasks._core import DataTask, Example, HubSource, Row, TaskDataError, TaskSpec
from tasks.templates import available_templates, encode_prompt, register_template, render_prompt

_registry: Registry[Callable[[], TaskSpec]] = Registry("task", package="tasks", entry_point_group="rlvr.tasks")
register = _registry.register

HUB_PREFIX = "hf:"


def get(name: str) -> TaskSpec:
    """The task registered as ``name`` (``hf:ORG/NAME[:CONFIG]`` builds one for any hub dataset)."""
    if name.startswith(HUB_PREFIX):
        from tasks.generic import hub_task

        spec = hub_task(name.removeprefix(HUB_PREFIX))
    else:
        spec = _registry.get(name)()
    spec.name = name
    return spec


def available() -> list[str]:
    """Names of every registered task."""
    return _registry.available()


def load(
    name: str,
    split: str | None = None,
    path: str | Path | None = None,
    limit: int | None = None,
    seed: int | None = None,
    *,
    require_answers: bool = True,
    **options: Any,
) -> list[Example]:
    """Examples of task ``name``: from ``path`` when given, else its default source (the hub for data
    sets, which ``datasets`` serves from its cache when offline). With ``seed`` the examples are
    shuffled before ``limit`` cuts them. ``options``: ``<role>_column="NAME"`` to map columns of a
    data set (roles: problem, answer, solution, id, tests, ...), difficulty knobs for generators.
    ``require_answers=False`` keeps rows without a gold answer (reference None), for label-free training."""
    if not require_answers:  # only then: a plug-in task's own load() need not know the keyword
        options["require_answers"] = False
    return get(name).load(split=split, path=path, limit=limit, seed=seed, **options)


__all__ = [
    "DataTask",
    "Example",
    "HubSource",
    "Row",
    "TaskDataError",
    "TaskSpec",
    "available",
    "encode_prompt",
    "available_templates",
    "get",
    "load",
    "register",
    "register_template",
    "render_prompt",
]
