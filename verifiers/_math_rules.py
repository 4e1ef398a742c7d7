"""Named comparison rules for notations that SymPy reads wrongly or not at all.

A rule looks at a normalised prediction and gold answer and returns True or False when it
knows the notation, None when it does not apply. ``compare`` is the judge's full comparison,
for the parts of a composite answer (the items of a list) or for a rewritten reading; it
returns None when only SymPy could tell. Rules are tried in the order they are defined; each
is small, and when in doubt a rule does not apply (or says not equal), never equal."""

from __future__ import annotations

import re
from collections.abc import Callable

from verifiers._math_answer import Normalized, normalize, top_level_items

Compare = Callable[[Normalized, Normalized], "bool | None"]
Rule = Callable[[Normalized, Normalized, Compare], "bool | str | None"]  # True, False, UNDECIDED, or None
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register a comparison rule under ``name``."""

    def add(function: Rule) -> Rule:
        if name in RULES:
            raise ValueError(f"comparison rule {name!r} is already registered")
        RULES[name] = function
        return function

    return add


def apply_rules(pred: Normalized, gold: Normalized, compare: Compare) -> tuple[str, bool | None] | None:
    """(rule name, verdict) of the first rule that applies; the verdict is None when a part
    needs SymPy. None when no rule applies."""
    for name, check in RULES.items():
        verdict = check(pred, gold, compare)
        if verdict is not None:
            return name, None if verdict == UNDECIDED else bool(verdict)
    return None


UNDECIDED = "needs SymPy"  # a rule applies, but a part of the answer needs SymPy

_CLOCK = re.compile(r"(\d{1,2}):([0-5]\d)(?::([0-5]\d))?(?:\s*([ap])\.?m\.?)?", re.IGNORECASE)


@rule("clock_time")
def clock_time(pred: Normalized, gold: Normalized, compare: Compare) -> bool | None:
    """``12:00`` is a time of day (SymPy reads it as nothing): equal to the same hours, minutes,
    seconds and, when both give it, the same half of the day."""
    p, g = _CLOCK.fullmatch(pred.key), _CLOCK.fullmatch(gold.key)
    if not (p and g):
        return None
    same_half = p.group(4) is None or g.group(4) is None or p.group(4).lower() == g.group(4).lower()
    return same_half and [int(x or 0) for x in p.groups()[:3]] == [int(x or 0) for x in g.groups()[:3]]


_ELLIPSIS = {"\\ldots"}  # normalize writes every ellipsis so


@rule("listed_items")
def listed_items(pred: Normalized, gold: Normalized, compare: Compare) -> bool | str | None:
    """Answers listed with commas ("19, 46, and 82", "a_3 = 2, a_{37} = 19", "1, 2, 3, \\ldots"):
    the same number of items, each equal to its own counterpart: in order for a sequence
    (one with an ellipsis), in any order otherwise. Lists of different lengths are left to
    SymPy (``p=5, q=2`` may be one pair)."""
    pred_items, gold_items = top_level_items(pred.latex), top_level_items(gold.latex)
    if len(pred_items) < 2 or len(pred_items) != len(gold_items) or not all(pred_items + gold_items):
        return None
    preds, golds = [normalize(item) for item in pred_items], [normalize(item) for item in gold_items]
    if _ELLIPSIS & {item.key for item in preds + golds}:
        verdicts = [compare(p, g) for p, g in zip(preds, golds, strict=True)]
        return False if False in verdicts else UNDECIDED if None in verdicts else True
    unmatched = list(golds)
    undecided = False
    for item in preds:
        verdicts = [compare(item, candidate) for candidate in unmatched]
        if True in verdicts:
            del unmatched[verdicts.index(True)]
        elif None in verdicts:
            undecided = True
        else:
            return False
    return UNDECIDED if undecided else True


_DECIMAL_COMMA = re.compile(r"([-+]?\d+),(\d+)")


def _decimal_comma_reading(latex: str) -> str | None:
    """``1000,99``, ``1,22``, ``0,111``: a comma that is neither a thousands separator nor
    likely a list: a leading 0, or more than three digits before it, or two digits after it
    (``1,000`` is a thousand and ``1,5`` may be the list 1, 5)."""
    match = _DECIMAL_COMMA.fullmatch("".join(latex.split()))
    if not match:
        return None
    whole, fraction = match.groups()
    digits = whole.lstrip("+-")
    if digits == "0" or len(digits) > 3 or len(fraction) == 2:
        return f"{whole}.{fraction}"
    return None


@rule("decimal_comma")
def decimal_comma(pred: Normalized, gold: Normalized, compare: Compare) -> bool | None:
    """A decimal comma read as a point, only against a decimal written with a point (``1,22``
    alone could be the list 1, 22)."""
    for one, other in ((pred, gold), (gold, pred)):
        reading = _decimal_comma_reading(one.latex)
        if reading is not None and re.fullmatch(r"[-+]?\d*\.\d+", other.key):
            verdict = compare(normalize(reading), other) if one is pred else compare(other, normalize(reading))
            return UNDECIDED if verdict is None else verdict
    return None


_SCIENTIFIC = re.compile(r"([-+]?\d+(?:\.\d+)?)(?:[eE]([-+]?\d+)|(?:\\times|\\cdot|\*|x)10\^\{?([-+]?\d+)\}?)")


@rule("scientific_notation")
def scientific_notation(pred: Normalized, gold: Normalized, compare: Compare) -> bool | None:
    """``1.5e3`` and ``1.5\\times10^{3}`` are 1500 (SymPy reads ``e`` as Euler's number)."""
    readings = []
    for side in (pred, gold):
        match = _SCIENTIFIC.fullmatch(side.key)
        if match:
            mantissa, exponent = match.group(1), int(match.group(2) or match.group(3))
            if abs(exponent) > 400:
                return None
            readings.append(normalize(_plain_decimal(mantissa, exponent)))
        else:
            readings.append(side)
    if readings[0] is pred and readings[1] is gold:
        return None
    verdict = compare(readings[0], readings[1])
    return UNDECIDED if verdict is None else verdict


def _plain_decimal(mantissa: str, exponent: int) -> str:
    sign = "-" if mantissa.startswith("-") else ""
    whole, _, fraction = mantissa.lstrip("+-").partition(".")
    digits, point = whole + fraction, len(whole) + exponent
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"
