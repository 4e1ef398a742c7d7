"""Deciding whether extracted answers match the reference: string and exact-number checks that
are always fast, then SymPy through ``math-verify`` (unbounded: run it in a ``WorkerPool``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from verifiers._math_answer import Normalized, close, normalize, simple_number
from verifiers._math_rules import apply_rules

MAX_DISTINCT_ANSWERS = 20  # more distinct boxed forms than this is hedging, whatever they are

CORRECT, WRONG, SEVERAL = "correct", "wrong", "several different answers"


@dataclass(frozen=True)
class Tolerance:
    """How close numbers must be to count as equal."""

    rel_tol: float = 1e-9  # relative tolerance: 3.14 is not pi
    precision: int | None = None  # decimal places a written decimal is rounded to (Math-Verify's float_rounding)


def judge(answers: list[str], references: list[str], tol: Tolerance, use_sympy: bool) -> str | None:
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
    agreement = [equivalent(other, final, tol, use_sympy) for other in others]
    if False not in agreement:
        return None if None in agreement else _against_references(final, references, tol, use_sympy)
    if not any("," in reference or "and" in reference for reference in references):
        return SEVERAL
    combined = normalize(", ".join(answer.raw for answer in distinct.values()))
    result = _against_references(combined, references, tol, use_sympy)
    return SEVERAL if result == WRONG else result


def _against_references(answer: Normalized, references: list[str], tol: Tolerance, use_sympy: bool) -> str | None:
    verdicts = [equivalent(answer, normalize(reference), tol, use_sympy) for reference in references]
    if any(verdicts):
        return CORRECT
    return None if None in verdicts else WRONG


def equivalent(pred: Normalized, gold: Normalized, tol: Tolerance, use_sympy: bool) -> bool | None:
    """Whether ``pred`` means ``gold``; None when undecided without SymPy."""
    if gold.choice and not gold.text and len(gold.key) <= 3:
        return pred.choice == gold.choice
    if gold.text is not None or pred.text is not None:
        return pred.text == gold.text
    if pred.assigned and gold.assigned and pred.assigned != gold.assigned:
        return False  # x = 5 does not answer y = 5
    if pred.key == gold.key:
        return True
    ruled = apply_rules(pred, gold, lambda p, g: equivalent(p, g, tol, use_sympy))
    if ruled is not None:
        return ruled[1]
    pred_number, gold_number = simple_number(pred.latex), simple_number(gold.latex)
    if pred_number is not None and gold_number is not None:
        written_decimal = "." in pred.latex or "." in gold.latex
        return any(
            _numbers_equal(p, g, tol, written_decimal) for p, g in _percent_readings(pred_number, gold_number, pred, gold)
        )
    if not use_sympy:
        return None
    return _sympy_equivalent(pred, gold, tol)


def _numbers_equal(pred: Any, gold: Any, tol: Tolerance, written_decimal: bool) -> bool:
    """Within ``tol.rel_tol``, or, when one side is a written decimal and the caller gave a
    precision, equal once both are rounded to that many places."""
    if close(pred, gold, tol.rel_tol):
        return True
    return tol.precision is not None and written_decimal and round(pred, tol.precision) == round(gold, tol.precision)


def _percent_readings(pred_value: Any, gold_value: Any, pred: Normalized, gold: Normalized) -> list[tuple[Any, Any]]:
    """``25\\%`` matches ``25`` and, written on one side only, also ``0.25``."""
    readings = [(pred_value, gold_value)]
    if pred.percent and not gold.percent:
        readings.append((pred_value / 100, gold_value))
    elif gold.percent and not pred.percent:
        readings.append((pred_value, gold_value / 100))
    return readings


_RELATION = re.compile(r"=|<|>|\\(?:[lg]eq?|neq?|in)(?![A-Za-z])")
_RADICAL = re.compile(r"\\sqrt|\^\s*\{?\s*-?\s*\(?\s*\d+\s*/|\^\s*\{\s*-?\\frac")


def _sympy_equivalent(pred: Normalized, gold: Normalized, tol: Tolerance) -> bool:
    import math_verify
    from sympy import Basic, MatrixBase, N, Set, Tuple
    from sympy.core.relational import Relational

    # a line y = 2x + 3 against the equation 2x - y + 3 = 0: compare the equations, not 2x + 3
    pred_latex = pred.raw if pred.assigned and _RELATION.search(gold.latex) else pred.latex
    gold_latex = gold.raw if gold.assigned and _RELATION.search(pred.latex) else gold.latex
    gold_parsed = math_verify.parse(f"\\boxed{{{gold_latex}}}", parsing_timeout=None)
    pred_parsed = math_verify.parse(f"\\boxed{{{pred_latex}}}", parsing_timeout=None)
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
        # our tolerance decides numbers, not math-verify's fixed rounding: 3.14 is not pi
        gold_value, pred_value = N(gold_expr, 30), N(pred_expr, 30)
        if not (gold_value.is_number and pred_value.is_number):
            return False
        if not (gold_value.is_finite and pred_value.is_finite):  # oo, -oo, zoo (1/0): only equal to themselves
            return bool(gold_value == pred_value)
        if not (gold_value.is_real and pred_value.is_real):
            return bool(abs(gold_value - pred_value) <= tol.rel_tol * max(abs(gold_value), abs(pred_value)))
        written_decimal = "." in pred.latex or "." in gold.latex
        readings = _percent_readings(pred_value, gold_value, pred, gold)
        return any(_numbers_equal(p, g, tol, written_decimal) for p, g in readings)
    # decimals inside tuples, intervals and matrices: rounded only where the caller asked
    rounding = tol.precision if tol.precision is not None else 12
    if math_verify.verify(gold_parsed, pred_parsed, float_rounding=rounding, timeout_seconds=None):
        return True
    return _radicals_equal(gold_expr, pred_expr, pred_latex, gold_latex)


def _radicals_equal(gold_expr: Any, pred_expr: Any, pred_latex: str, gold_latex: str) -> bool:
    """``\\sqrt{1/n}`` is ``\\frac{1}{\\sqrt n}`` for the positive quantities answers are about:
    SymPy keeps them apart for complex ``n``. Only when both sides are written with radicals
    (so ``\\sqrt{x^2}`` is never ``x``) and neither has an absolute value."""
    from sympy import Abs, Expr, Symbol, simplify

    if not (_RADICAL.search(pred_latex) and _RADICAL.search(gold_latex)):
        return False
    if not (isinstance(gold_expr, Expr) and isinstance(pred_expr, Expr)) or gold_expr.has(Abs) or pred_expr.has(Abs):
        return False
    symbols = gold_expr.free_symbols | pred_expr.free_symbols
    if not symbols:
        return False
    positive = {symbol: Symbol(symbol.name, positive=True) for symbol in symbols}
    return simplify(gold_expr.xreplace(positive) - pred_expr.xreplace(positive)) == 0


def judge_in_worker(answers: list[str], references: list[str], tol: Tolerance) -> str:
    """:func:`judge` with SymPy, for a ``WorkerPool``; quiets math-verify's per-call warnings."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    result = judge(answers, references, tol, use_sympy=True)
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
    ("\\sqrt{1/n}", "\\frac{1}{\\sqrt{n}}"),
    ("(\\frac{1}{5}, 0.5)", "(0.2, \\frac{1}{2})"),
    ("\\begin{pmatrix}0.5\\\\x\\end{pmatrix}", "\\begin{pmatrix}\\frac12\\\\x\\end{pmatrix}"),
    ("F_n = \\sum_{k=0}^{n-1} F_k F_{n-k}", "F_n = \\sum_{k=0}^{n-1} F_{n-k} F_k"),
    ("x \\geq 5", "5 \\leq x"),
]


def warm_up() -> None:
    """Exercise the parser and comparisons once so that the first real call is not slow."""
    for answer, reference in _WARM_UP:
        judge_in_worker([answer], [reference], Tolerance())
