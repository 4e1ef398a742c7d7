"""Procedural math problems: no download, unlimited, deterministic by seed, with difficulty knobs.

Example ``i`` of ``(task, split, seed)`` depends on nothing else, so ``limit=10`` is a prefix of
``limit=1000`` and the ``train`` and ``test`` splits never share a random stream. Each example
carries a short, regular worked solution in ``metadata["solution"]`` ending in ``\\boxed{answer}``
(the demo's SFT warm-start trains on it) and the gold answer as its reference.

    tasks.load("arithmetic", limit=100, seed=0, steps=3, digits=2)
    tasks.load("linear", split="test", limit=50, both_sides=True)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks import register
from tasks._core import Example, TaskDataError, TaskSpec

DEFAULT_COUNT = 1000


@dataclass(frozen=True)
class Knob:
    default: int | bool | str
    doc: str
    minimum: int | None = None
    maximum: int | None = None


Maker = Callable[..., tuple[str, int, list[str], dict[str, Any]]]  # (rng, **knobs) -> problem, answer, steps, extra


@dataclass(kw_only=True)
class GeneratedTask(TaskSpec):
    """A task whose problems are made by ``make(rng, **knobs)`` -> (problem, answer, solution steps, extra metadata)."""

    make: Maker
    knobs: dict[str, Knob] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return "generated (seeded, unlimited)"

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
        """``limit`` examples (default 1000) of the stream named by ``split`` (default "train") and ``seed``
        (default 0); ``options`` are the difficulty knobs. Generated problems always have answers, so
        ``require_answers`` changes nothing."""
        if path is not None:
            raise TaskDataError(f"task {self.name!r} generates its problems; it reads no file (drop path=)")
        if limit is not None and limit < 0:
            raise TaskDataError(f"limit must be a positive number of examples or None, got {limit}")
        settings = self.settings(options)
        split = split or "train"
        seed = 0 if seed is None else seed
        return [
            self.example(index, split, seed, settings) for index in range(DEFAULT_COUNT if limit is None else limit)
        ]

    def settings(self, options: dict[str, Any]) -> dict[str, Any]:
        """Knob values: defaults overridden by ``options``, each checked for type and range."""
        unknown = sorted(set(options) - set(self.knobs))
        if unknown:
            valid = ", ".join(f"{name} ({knob.doc}; default {knob.default!r})" for name, knob in self.knobs.items())
            raise TaskDataError(f"task {self.name!r} has no option {', '.join(map(repr, unknown))}; its knobs: {valid}")
        settings = {}
        for name, knob in self.knobs.items():
            value = options.get(name, knob.default)
            if type(value) is not type(knob.default):
                raise TaskDataError(f"{self.name} knob {name!r} should be {type(knob.default).__name__}, got {value!r}")
            if (knob.minimum is not None and value < knob.minimum) or (
                knob.maximum is not None and value > knob.maximum
            ):
                raise TaskDataError(
                    f"{self.name} knob {name!r} must be in [{knob.minimum}, {knob.maximum}], got {value!r}"
                )
            settings[name] = value
        return settings

    def example(self, index: int, split: str, seed: int, settings: dict[str, Any]) -> Example:
        rng = random.Random(f"{self.name}/{split}/{seed}/{index}")  # str seeds hash deterministically
        problem, answer, steps, extra = self.make(rng, **settings)
        solution = " ".join([*steps, f"\\boxed{{{answer}}}"])
        return Example(
            id=f"{self.name}-{split}-{seed}-{index}",
            problem=problem,
            reference=str(answer),
            verifier=self.verifier,
            metadata={"solution": solution, "split": split, "seed": seed, "index": index, **settings, **extra},
        )


def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(1 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def make_arithmetic(rng: random.Random, steps: int, digits: int, ops: str) -> tuple[str, int, list[str], dict]:
    """``a op b op c ...`` with usual precedence: products first, then sums left to right."""
    if not ops or set(ops) - set("+-*"):
        raise TaskDataError(f"arithmetic knob 'ops' must be a non-empty subset of '+-*', got {ops!r}")
    numbers = [_operand(rng, digits) for _ in range(steps + 1)]
    operators = [rng.choice(ops) for _ in range(steps)]
    expression = " ".join([str(numbers[0])] + [f"{op} {n}" for op, n in zip(operators, numbers[1:], strict=True)])
    lines = []
    while "*" in operators:
        i = operators.index("*")
        product = numbers[i] * numbers[i + 1]
        lines.append(f"{numbers[i]} * {numbers[i + 1]} = {product}.")
        numbers[i : i + 2] = [product]
        del operators[i]
    total = numbers[0]
    for op, number in zip(operators, numbers[1:], strict=True):
        result = total + number if op == "+" else total - number
        lines.append(f"{total} {op} {number} = {result}.")
        total = result
    return f"What is {expression}?", total, lines, {"expression": expression}


def _term(coefficient: int) -> str:
    return {1: "x", -1: "-x"}.get(coefficient, f"{coefficient}x")


def _plus(number: int) -> str:
    return f"+ {number}" if number >= 0 else f"- {-number}"


def _nonzero(rng: random.Random, limit: int, exclude: tuple[int, ...] = (0,)) -> int:
    choices = [n for n in range(-limit, limit + 1) if n not in exclude]
    return rng.choice(choices)


def make_linear(rng: random.Random, digits: int, both_sides: bool) -> tuple[str, int, list[str], dict]:
    """``a x + b = c`` (or ``a x + b = c x + d``) with an integer solution."""
    limit = 10**digits - 1
    x = rng.randint(-limit, limit)
    a = _nonzero(rng, limit, exclude=(0, 1))
    b = _nonzero(rng, limit)
    if both_sides:
        c = _nonzero(rng, limit, exclude=(0, a))
        d = (a - c) * x + b
        equation = f"{_term(a)} {_plus(b)} = {_term(c)} {_plus(d)}"
        k = a - c
        lines = [f"Move the x terms left and the numbers right: {_term(k)} = {d - b}."]
    else:
        right = a * x + b
        equation = f"{_term(a)} {_plus(b)} = {right}"
        move = f"Subtract {b} from both sides" if b > 0 else f"Add {-b} to both sides"
        lines = [f"{move}: {_term(a)} = {right - b}."]
        k = a
    if k == -1:
        lines.append(f"Multiply both sides by -1: x = {x}.")
    elif k != 1:
        lines.append(f"Divide both sides by {k}: x = {x}.")
    return f"Solve for x: {equation}", x, lines, {"equation": equation}


@register("arithmetic")
def arithmetic() -> GeneratedTask:
    return GeneratedTask(
        kind="math",
        verifier="math",
        summary="Generated multi-step integer arithmetic (+, -, * with precedence), worked solutions included.",
        make=make_arithmetic,
        knobs={
            "steps": Knob(2, "number of operations", 1, 20),
            "digits": Knob(2, "digits of each operand", 1, 12),
            "ops": Knob("+-*", "operators to draw from, a subset of '+-*'"),
        },
    )


@register("linear")
def linear() -> GeneratedTask:
    return GeneratedTask(
        kind="math",
        verifier="math",
        summary="Generated linear equations in x with integer solutions, worked solutions included.",
        make=make_linear,
        knobs={
            "digits": Knob(1, "digits of coefficients and of the solution", 1, 6),
            "both_sides": Knob(False, "put an x term on both sides"),
        },
    )
