"""Math data sets: the gold answer is one string that the ``math`` verifier compares with the model's
boxed answer. Answers are normalised here, once: GSM8K's ``#### 42``, MATH's last ``\\boxed{}`` of a
solution when there is no answer column, list-valued answers (OlympiadBench, Minerva)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks import register
from tasks._answers import after_hashes, clean_answer, last_boxed
from tasks._core import DataTask, HubSource, NoGoldAnswer, Row, RowConverter

MATH_COLUMNS: dict[str, tuple[str, ...]] = {
    "problem": ("problem", "question", "Problem", "Question"),
    "answer": ("answer", "final_answer", "Answer"),
    "solution": ("solution", "Solution"),
    "id": ("unique_id", "id", "ID"),
}

# DAPO-Math-17k wraps every problem in an instruction for an "Answer:" line; our templates ask for
# \boxed{} instead, so the instruction is removed.
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


def math_rows(alternatives: bool = False, clean_problem: Callable[[str], str] | None = None) -> RowConverter:
    """Row converter for math sets. ``alternatives``: a list-valued answer lists equivalent forms of
    one answer (Minerva), so the first is the reference and all are kept in metadata; otherwise a
    list holds the parts of one answer (OlympiadBench) and is joined with ", "."""

    def convert(row: Row) -> tuple[Any, str, str, dict[str, Any]]:
        problem = _problem_text(row)
        if clean_problem is not None:
            problem = clean_problem(problem)
        answer = row.get("answer", required=False)
        solution = row.get("solution", required=False)
        if isinstance(solution, list):  # OlympiadBench: one or more full solutions
            solution = "\n\n".join(str(part) for part in solution)
        metadata: dict[str, Any] = {}
        if not _is_answer(answer):
            raise row.error(f"the answer should be text or a number (or a list of them), got {type(answer).__name__}: "
                            f"{str(answer)[:80]!r}")
        if isinstance(answer, list) and alternatives:
            metadata["answers"] = [clean_answer(item) for item in answer]
            answer = answer[0] if answer else None
        if isinstance(answer, str) and "####" in answer:
            reasoning, answer = after_hashes(answer)
            solution = solution or reasoning
        try:
            reference = _gold_answer(row, answer, solution)
        except NoGoldAnswer:
            if not row.answer_optional:
                raise
            reference = None
        example_id = row.get("id", required=False)
        metadata = {**row.rest(), **metadata}
        if solution is not None:
            metadata["solution"] = solution
        return example_id, problem, reference, metadata

    return convert


def _gold_answer(row: Row, answer: Any, solution: str | None) -> str:
    """The row's normalised gold answer: its answer column, else the last ``\\boxed{}`` of its solution;
    :class:`NoGoldAnswer` when it has neither."""
    if answer is None or answer == "" or answer == []:
        if solution is None:
            raise row.error(
                f"no gold answer: {_looked_for(row, 'answer')} is missing or empty and there is no solution "
                f"({_looked_for(row, 'solution')}) to take a \\boxed{{}} answer from; the row has "
                f"{', '.join(map(repr, row.data))}. Pass answer_column='NAME' to say which column holds it.",
                NoGoldAnswer,
            )
        answer = last_boxed(solution)
        if answer is None:
            raise row.error("no answer column and no \\boxed{...} in its solution to take the answer from", NoGoldAnswer)
    reference = clean_answer(answer)
    if not reference:
        raise row.error(f"the answer {answer!r} is empty after normalisation", NoGoldAnswer)
    return reference


def _is_answer(value: Any) -> bool:
    """Text, a number, or a list of them (None: no answer, handled by the caller); a bool or a mapping is no answer."""
    if isinstance(value, list):
        return all(_is_answer(item) and item is not None and not isinstance(item, list) for item in value)
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def _looked_for(row: Row, role: str) -> str:
    return "the " + role + " column (" + " or ".join(repr(name) for name in row.columns[role]) + ")"


def _problem_text(row: Row) -> str:
    value = row.get("problem")
    if isinstance(value, list):  # verl-style chat prompt: [{"role": "user", "content": ...}]
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role", "user") == "user"]
        if not users or not isinstance(users[-1], str):
            raise row.error("the problem is a list but not of chat messages with a user 'content'")
        if not users[-1].strip():
            raise row.error("the problem's user message is empty")
        return users[-1]
    if not isinstance(value, str):
        raise row.error(f"problem should be text, got {type(value).__name__}")
    return value


def strip_dapo_instruction(problem: str) -> str:
    return problem.removeprefix(DAPO_PREFIX).removesuffix(DAPO_SUFFIX).strip()


def math_task(summary: str, hub: HubSource, sizes: dict[str, int] | None = None, **extra: Any) -> DataTask:
    columns = {**MATH_COLUMNS, **extra.pop("columns", {})}
    convert = extra.pop("convert", None) or math_rows()
    return DataTask(
        kind="math",
        verifier="math",
        summary=summary,
        hub=hub,
        sizes=sizes or {},
        columns=columns,
        convert=convert,
        **extra,
    )


@register("gsm8k")
def gsm8k() -> DataTask:
    return math_task(
        "GSM8K grade-school word problems; integer answers ('#### N' normalised away).",
        HubSource("openai/gsm8k", "main", split="train"),
        {"train": 7473, "test": 1319},
    )


@register("math")
def math_full() -> DataTask:
    return math_task(
        "MATH competition problems (Hendrycks et al.), 7 subjects, levels 1-5; answer = last \\boxed{} of the solution.",
        HubSource("DigitalLearningGmbH/MATH-lighteval", split="train"),
        {"train": 7500, "test": 5000},
        columns={"id": ("unique_id", "id")},
    )


@register("math500")
def math500() -> DataTask:
    return math_task(
        "MATH-500: the 500-problem MATH test subset of 'Let's Verify Step by Step'.",
        HubSource("HuggingFaceH4/MATH-500", split="test"),
        {"test": 500},
    )


@register("aime24")
def aime24() -> DataTask:
    return math_task(
        "AIME 2024 (I and II): 30 problems, integer answers 0-999.", HubSource("HuggingFaceH4/aime_2024"), {"train": 30}
    )


@register("aime25")
def aime25() -> DataTask:
    return math_task(
        "AIME 2025 (I and II): 30 problems, integer answers 0-999.",
        HubSource("math-ai/aime25", split="test"),
        {"test": 30},
    )


@register("amc23")
def amc23() -> DataTask:
    return math_task(
        "AMC 2023 (12A/12B): 40 problems with numeric answers.", HubSource("math-ai/amc23", split="test"), {"test": 40}
    )


@register("dapo-math-17k")
def dapo_math_17k() -> DataTask:
    return math_task(
        "DAPO-Math-17k RL training set (integer answers); its 'Answer:' instruction is stripped, repeats dropped.",
        HubSource("BytedTsinghua-SIA/DAPO-Math-17k"),
        columns={
            "problem": ("prompt", "problem"),
            "answer": ("reward_model.ground_truth", "answer"),
            "id": ("extra_info.index", "id"),
        },
        convert=math_rows(clean_problem=strip_dapo_instruction),
        dedupe=True,
    )


@register("deepscaler")
def deepscaler() -> DataTask:
    return math_task(
        "DeepScaleR-Preview RL training set (AIME, AMC, Omni-MATH, STILL problems).",
        HubSource("agentica-org/DeepScaleR-Preview-Dataset"),
    )


@register("olympiadbench")
def olympiadbench() -> DataTask:
    return math_task(
        "OlympiadBench, English text-only math, open-ended (OE_TO_maths_en_COMP); several answers joined by ', '.",
        HubSource("math-ai/olympiadbench", split="test"),
        {"test": 675},
    )


@register("minerva")
def minerva() -> DataTask:
    return math_task(
        "Minerva Math (OCW courses: physics, chemistry, astronomy); first listed answer is the reference.",
        HubSource("math-ai/minervamath", split="test"),
        {"test": 272},
        convert=math_rows(alternatives=True),
    )
