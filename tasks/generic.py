"""Your own data without code: ``jsonl`` and ``parquet`` (any local file, ``path=``) and
``hf:ORG/NAME[:CONFIG]`` (any hub dataset). Columns are found by common names (problem / question,
answer / final_answer, solution, id) or named with ``problem_column=``, ``answer_column=``, ...;
giving ``tests_column=`` makes it a code task checked by the ``code`` verifier."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tasks import register
from tasks._core import DataTask, Example, HubSource
from tasks.code_sets import TESTS_COLUMNS, tests_row
from tasks.math_sets import MATH_COLUMNS, math_rows


@dataclasses.dataclass(kw_only=True)
class UserDataTask(DataTask):
    """A math task by default; ``tests_column=...`` turns it into a code task."""

    def load(
        self,
        split: str | None = None,
        path: str | Path | None = None,
        limit: int | None = None,
        seed: int | None = None,
        *,
        require_answers: bool = True,
        **options: Any,
    ) -> list[Example]:
        if "tests_column" in options:
            as_code = dataclasses.replace(self, kind="code", verifier="code", convert=tests_row, columns=TESTS_COLUMNS)
            return DataTask.load(as_code, split, path, limit, seed, **options)
        return super().load(split, path, limit, seed, require_answers=require_answers, **options)


def user_data_task(summary: str, hub: HubSource | None = None) -> UserDataTask:
    return UserDataTask(
        kind="math", verifier="math", summary=summary, convert=math_rows(), columns=MATH_COLUMNS, hub=hub
    )


@register("jsonl")
def jsonl() -> UserDataTask:
    return user_data_task("Your own JSON lines (or .json) file: path=FILE, columns by name or *_column options.")


@register("parquet")
def parquet() -> UserDataTask:
    return user_data_task("Your own parquet file: path=FILE, columns by name or *_column options.")


def hub_task(spec: str) -> UserDataTask:
    """``ORG/NAME`` or ``ORG/NAME:CONFIG`` (the part after ``hf:``)."""
    dataset, _, config = spec.partition(":")
    return user_data_task(f"Hub dataset {dataset}", HubSource(dataset, config or None))
