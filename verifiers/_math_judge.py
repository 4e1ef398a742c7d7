"""Deciding whether extracted answers match the reference: string and exact-number checks that
are always fast, then SymPy through ``math-verify`` (unbounded: run it in a ``WorkerPool``)."""

from __future__ import annotations

from typing import Any

from verifiers._math_answer import Normalized, close, normalize, simple_number

MAX_DISTINCT_ANSWERS = 20  # more distinct boxed forms than this is hedging, whatever they are

CORRECT, WRONG, SEVERAL = "correct", "wrong", "several different answers"


def judge(answers: list[str], references: list[str], rel_tol: float, use_sympy: bool) -> str | None:
    """"correct", "wrong" or "several different answers" for the boxed ``answers`` (the last is
    the final one) against any of ``references``; None when only SymPy could tell and
    ``use_sympy`` is off.

    Several boxes that are not all equivalent are hedging, unless together they are the
    reference: ``\\boxed{1}`` and ``\\boxed{-2}`` answer a question whose gold answer is ``1, -2``."""
    distinct: dict[str, Normalized] = {}
    for answer in answers:
        normalized = normalize(answer)
        distinct.setdefault(normalized.key, normalized)
    if len(distinct) > MAX_DISTINCT_ANSWERS:
        return SEVERAL
    *others, final = distinct.values()
    agreement = [equivalent(other, final, rel_tol, use_sympy) for other in others]
    if False not in agreement:
        return None if None in agreement else _against_references(final, references, rel_tol, use_sympy)
    if not any("," in reference or "and" in reference for reference in references):
        return SEVERAL
    combined = normalize(", ".join(answer.latex for answer in distinct.values()))
    result = _against_references(combined, references, rel_tol, use_sympy)
    return SEVERAL if result == WRONG else result


def _against_references(answer: Normalized, references: list[str], rel_tol: float, use_sympy: bool) -> str | None:
    verdicts = [equivalent(answer, normalize(reference), rel_tol, use_sympy) for reference in references]
    if any(verdicts):
        return CORRECT
    return None if None in verdicts else WRONG


def equivalent(pred: Normalized, gold: Normalized, rel_tol: float, use_sympy: bool) -> bool | None:
    """Whether ``pred`` means ``gold``; None when undecided without SymPy."""
    if gold.choice and not gold.text and len(gold.key) <= 3:
        return pred.choice == gold.choice
    if gold.text is not None or pred.text is not None:
        return pred.text == gold.text
    if pred.key == gold.key:
        return True
    pred_number, gold_number = simple_number(pred.latex), simple_number(gold.latex)
    if pred_number is not None and gold_number is not None:
        return any(close(p, g, rel_tol) for p, g in _percent_readings(pred_number, gold_number, pred, gold))
    if not use_sympy:
        return None
    return _sympy_equivalent(pred, gold, rel_tol)


def _percent_readings(pred_value: Any, gold_value: Any, pred: Normalized, gold: Normalized) -> list[tuple[Any, Any]]:
    """``25\\%`` matches ``25`` and, written on one side only, also ``0.25``."""
    readings = [(pred_value, gold_value)]
    if pred.percent and not gold.percent:
        readings.append((pred_value / 100, gold_value))
    elif gold.percent and not pred.percent:
        readings.append((pred_value, gold_value / 100))
    return readings


def _sympy_equivalent(pred: Normalized, gold: Normalized, rel_tol: float) -> bool:
    import math_verify
    from sympy import Basic, MatrixBase, N, Set, Tuple
    from sympy.core.relational import Relational

    gold_parsed = math_verify.parse(f"\\boxed{{{gold.latex}}}", parsing_timeout=None)
    pred_parsed = math_verify.parse(f"\\boxed{{{pred.latex}}}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    gold_expr, pred_expr = gold_parsed[0], pred_parsed[0]

    def scalar(expr: Any) -> bool:
        return (
            isinstance(expr, Basic)
            and not isinstance(expr, (Set, Tuple, Relational, MatrixBase))
            and not expr.free_symbols
            and bool(expr.is_number)
        )

    if scalar(gold_expr) and scalar(pred_expr):
        # our relative tolerance decides numbers, not math-verify's fixed rounding: 3.14 is not pi
        gold_value, pred_value = N(gold_expr, 30), N(pred_expr, 30)
        if not (gold_value.is_number and pred_value.is_number):
            return False
        if not (gold_value.is_finite and pred_value.is_finite):  # oo, -oo, zoo (1/0): only equal to themselves
            return bool(gold_value == pred_value)
        readings = _percent_readings(pred_value, gold_value, pred, gold)
        return any(bool(abs(p - g) <= rel_tol * max(abs(p), abs(g))) for p, g in readings)
    return bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=None))


def judge_in_worker(answers: list[str], references: list[str], rel_tol: float) -> str:
    """:func:`judge` with SymPy, for a ``WorkerPool``; quiets math-verify's per-call warnings."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    result = judge(answers, references, rel_tol, use_sympy=True)
    assert result is not None
    return result


_WARM_UP = [  # one of each kind SymPy handles, so that its lazy imports happen before the clock runs
    ("x^2+2x+1", "(x+1)^2"),
    ("\\sqrt{8}", "2\\sqrt{2}"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("(-\\infty, 3]", "(-\\infty,3)"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("y=2x+3", "2x+3"),
    ("\\sin^2 x+\\cos^2 x", "1"),
]


def warm_up() -> None:
    """Exercise the parser and comparisons once so that the first real call is not slow."""
    for answer, reference in _WARM_UP:
        judge_in_worker([answer], [reference], 1e-9)
