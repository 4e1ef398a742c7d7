"""The math answer checker: the final answer of a completion against a gold answer.

Extraction and simple comparisons (equal strings, plain numbers, multiple-choice letters, words)
run in the caller's process; anything that needs SymPy runs in a :class:`WorkerPool` process that
is killed when it exceeds ``time_limit``, which works from any thread (math-verify's own
``signal.alarm`` timeout only works in the main thread)."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from verifiers import register
from verifiers._math_answer import EXTRACTION_MODES, ExtractionMode, extract_answers, reference_boxes
from verifiers._math_judge import CORRECT, SEVERAL, Tolerance, judge, judge_in_worker, warm_up
from verifiers.base import CallTimeout, RemoteError, Verdict, Verifier, WorkerCrashed, WorkerPool


@register("math")
class MathVerifier(Verifier):
    """Checks the final answer of a math completion against a gold answer (LaTeX or plain).

    Options:
        extraction: where the answer is read. "strict": a ``\\boxed{}`` answer, else a final-answer
            statement ("The answer is X", "Answer: X", "#### X"). "lenient" (the default, how other
            evaluation harnesses read answers): strict, else the last math expression (``$...$``,
            ``\\[...\\]``) of the final region, else a completion that is itself only an answer,
            else the last number of its prose; a box holding a sentence is read the same way.
        require_boxed: only a ``\\boxed{}``/``\\fbox{}`` answer counts, in either mode (a format
            requirement for training).
        on_multiple: "reject" scores several non-equivalent boxed answers 0 ("several different
            answers"); "last" takes the last one, as other evaluation harnesses do.
        rel_tol: relative tolerance for numeric answers (``3.14`` is not ``\\pi``).
        precision: None, or the number of decimal places to which a decimal written on either side
            is rounded before it is compared (Math-Verify's ``float_rounding``): with 2, ``0.33``
            matches ``\\frac{1}{3}``, also inside tuples, intervals and matrices.
        time_limit: seconds one verification may take; beyond it the verdict is "timeout".
        answer_form: "any" (the default) judges any expression by its value; "number" pays only an
            answer stated as one number (units and an ``x =`` prefix allowed): for tasks whose problem is
            an expression, where "So the answer is 9 - 3." copies the question and would be paid as 6.
    """

    def __init__(
        self,
        extraction: ExtractionMode = "lenient",
        require_boxed: bool = False,
        on_multiple: Literal["reject", "last"] = "reject",
        rel_tol: float = 1e-9,
        precision: int | None = None,
        time_limit: float = 2.0,
        answer_form: Literal["any", "number"] = "any",
    ):
        if extraction not in EXTRACTION_MODES:
            raise ValueError(f"extraction must be 'strict' or 'lenient', not {extraction!r}")
        if on_multiple not in ("reject", "last"):
            raise ValueError(f"on_multiple must be 'reject' or 'last', not {on_multiple!r}")
        if not rel_tol >= 0:
            raise ValueError(f"rel_tol must be >= 0, not {rel_tol!r}")
        if precision is not None and not (isinstance(precision, int) and 0 <= precision <= 15):
            raise ValueError(f"precision must be None or a number of decimal places from 0 to 15, not {precision!r}")
        if not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, not {time_limit!r}")
        if answer_form not in ("any", "number"):
            raise ValueError(f"answer_form must be 'any' or 'number', not {answer_form!r}")
        self.extraction = extraction
        self.answer_form = answer_form
        self.require_boxed = require_boxed
        self.on_multiple = on_multiple
        self.rel_tol = rel_tol
        self.precision = precision
        self._tolerance = Tolerance(rel_tol, precision)
        self.time_limit = time_limit
        self._pool = WorkerPool(
            functools.partial(judge_in_worker, tol=self._tolerance),
            initializer=warm_up,
        )
        self._pool.start(1)

    def verify_batch(
        self, completions: Sequence[str], references: Sequence[Any], workers: int | None = None
    ) -> list[Verdict]:
        """Verdicts in input order; SymPy work runs in up to ``workers`` processes (default: one per CPU)."""
        self._pool.start(workers or os.cpu_count() or 1)
        return super().verify_batch(completions, references, workers)

    def final_answer(self, completion: str) -> str | None:
        """The answer :meth:`verify` reads from ``completion`` (its last extracted one), None when there is none."""
        answers = extract_answers(str(completion), require_boxed=self.require_boxed, mode=self.extraction).answers
        return answers[-1] if answers else None

    def verify(self, completion: str, reference: Any) -> Verdict:
        """The verdict for ``completion`` against the gold answer ``reference`` (a string, a
        number, or a list of acceptable answers). Never raises."""
        try:
            return self._verify(completion, reference)
        except Exception as error:
            return Verdict(0.0, False, None, "error", {"error": f"{type(error).__name__}: {error}"})

    def _verify(self, completion: str, reference: Any) -> Verdict:
        references = _reference_answers(reference)
        if not references:
            return Verdict(0.0, False, None, "error", {"error": f"empty reference answer {reference!r}"})
        extraction = extract_answers(str(completion), require_boxed=self.require_boxed, mode=self.extraction)
        if not extraction.answers:
            return Verdict(0.0, False, None, "no answer", {"problem": extraction.problem})
        answers = extraction.answers[-1:] if self.on_multiple == "last" else extraction.answers
        extracted = answers[-1]
        details: dict[str, Any] = {"boxed": extraction.boxed, "answers": len(answers), "found_by": extraction.source}
        if self.answer_form == "number" and not all(map(is_one_number, answers)):
            return Verdict(0.0, False, extracted, "not a number", details)
        result = judge(answers, references, self._tolerance, use_sympy=False)
        if result is None:
            details["sympy"] = True
            try:
                result = self._pool.call(answers, references, timeout=self.time_limit)
            except CallTimeout:
                return Verdict(0.0, False, extracted, "timeout", details | {"time_limit": self.time_limit})
            except (WorkerCrashed, RemoteError) as error:
                return Verdict(0.0, False, extracted, "error", details | {"error": str(error)})
        correct = result == CORRECT
        if result == SEVERAL:
            extracted = None
        return Verdict(float(correct), correct, extracted, result, details)

    def close(self) -> None:
        """Stop the worker processes (they also stop with this process)."""
        self._pool.close()


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:(?:,|\{,\})\d{3})+|\d+)(?:\.\d+)?(?:\\?%)?|[-+]?\d+/\d+"
                     r"|[-+]?\\[dt]?frac\{\d+\}\{\d+\}")
_ASSIGNMENT = re.compile(r"^[A-Za-z]\w*\s*=\s*")
_UNITS = re.compile(r"(?:\s*(?:\\(?:text|mathrm)\{[^{}]*\}|[A-Za-z]+\.?))+$")


def is_one_number(answer: str) -> bool:
    """Whether ``answer`` states one number (``-1,234``, ``0.75``, ``3/4``, ``\\frac{3}{4}``, ``x = 5``,
    ``6 apples``), not an expression (``9 - 3``, ``2^3``)."""
    text = answer.strip().strip("$").strip()
    text = _UNITS.sub("", _ASSIGNMENT.sub("", text)).strip()
    return _NUMBER.fullmatch(text) is not None


def _reference_answers(reference: Any) -> list[str]:
    items = reference if isinstance(reference, (list, tuple)) else [reference]
    answers = []
    for item in items:
        text = str(item).strip()
        answers.append(reference_boxes(text) or text)
    return [answer for answer in answers if answer]
