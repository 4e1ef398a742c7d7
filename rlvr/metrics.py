"""Evaluation statistics: pass@k, avg@n, maj@k and bootstrap confidence intervals over problems.

Pure Python and NumPy (no torch), so ``rlvr eval`` and the tests can use them without a model. Each
per-problem function returns the expected score of ONE problem from its ``n`` samples; a task's score is
the mean over problems, and :func:`bootstrap_ci` gives its uncertainty by resampling problems.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

Equivalence = Callable[[Any, Any], bool]

# Above this many k-subsets maj@k is estimated from this many uniformly drawn subsets instead of all.
MAJ_EXACT_LIMIT = 20_000


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` samples: ``1 - C(n-c, k) / C(n, k)``.

    Computed in the product form ``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` (Chen et al. 2021), which never
    forms the huge binomials, so it is stable for any ``n``.
    """
    if n < 1:
        raise ValueError(f"pass@k needs at least one sample per problem, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"the number of correct samples c={c} must lie between 0 and n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n={n} samples; draw at least k samples per problem or lower k")
    if n - c < k:
        return 1.0
    failure = 1.0
    for i in range(n - c + 1, n + 1):
        failure *= 1.0 - k / i
    return 1.0 - failure


def avg_at_n(correct_flags: Sequence[bool]) -> float:
    """avg@n of one problem: the fraction of its ``n`` samples that are correct."""
    if len(correct_flags) == 0:
        raise ValueError("avg@n needs at least one sample per problem")
    return sum(bool(flag) for flag in correct_flags) / len(correct_flags)


def answer_classes(answers: Sequence[Any], equivalent: Equivalence | None = None) -> list[int]:
    """Class id per answer, grouping answers that are ``equivalent`` (default ``==``); ``None`` gives -1.

    Classes are numbered in order of first appearance. Each answer joins the first existing class whose
    first member it is equivalent to, so a non-transitive ``equivalent`` still yields one fixed grouping.
    """
    same = equivalent if equivalent is not None else _equal
    representatives: list[Any] = []
    exact_index: dict[Hashable, int] = {}
    classes: list[int] = []
    for answer in answers:
        if answer is None:
            classes.append(-1)
            continue
        found = exact_index.get(answer) if isinstance(answer, Hashable) else None
        if found is None:
            found = next((i for i, rep in enumerate(representatives) if same(answer, rep)), None)
        if found is None:
            found = len(representatives)
            representatives.append(answer)
        if isinstance(answer, Hashable):
            exact_index.setdefault(answer, found)
        classes.append(found)
    return classes


def maj_at_k(
    answers: Sequence[Any],
    correct_flags: Sequence[bool],
    k: int,
    equivalent: Equivalence | None = None,
    *,
    seed: int = 0,
) -> float:
    """Expected majority-vote accuracy of one problem when voting over ``k`` of its ``n`` samples.

    ``answers[i]`` is the answer extracted from sample ``i`` (``None`` when none was found; such samples do
    not vote) and ``correct_flags[i]`` whether it is correct. Answers are grouped by ``equivalent`` (the
    verifier's equivalence; default ``==``), see :func:`answer_classes`. In one vote the class with most
    members wins; a tie goes to the tied class whose earliest member comes first in sample order. The
    vote is correct when the winning class's first member (in the full sample list) is correct; a vote
    with no answers at all is wrong.

    The result is the mean vote over all ``C(n, k)`` subsets of size ``k`` (unbiased for maj@k of ``k``
    fresh samples). Up to :data:`MAJ_EXACT_LIMIT` subsets are enumerated exactly; beyond that the mean is
    estimated from ``MAJ_EXACT_LIMIT`` uniformly drawn subsets with a ``seed``-ed generator (standard error
    at most ``0.5 / sqrt(MAJ_EXACT_LIMIT)`` ~ 0.0035, and the same number on every run).
    """
    n = len(answers)
    if n != len(correct_flags):
        raise ValueError(f"maj@k got {n} answers but {len(correct_flags)} correctness flags; pass one per sample")
    if not 1 <= k <= n:
        raise ValueError(f"maj@{k} needs 1 <= k <= n={n} samples; draw at least k samples per problem or lower k")
    classes = np.asarray(answer_classes(answers, equivalent), dtype=np.int64)
    num_classes = int(classes.max()) + 1 if n else 0
    if num_classes == 0:
        return 0.0
    first_member = [int(np.flatnonzero(classes == cls)[0]) for cls in range(num_classes)]
    class_correct = np.array([bool(correct_flags[i]) for i in first_member] + [False])  # last entry: no vote

    if math.comb(n, k) <= MAJ_EXACT_LIMIT:
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        subsets = np.sort(np.argsort(rng.random((MAJ_EXACT_LIMIT, n)), axis=1)[:, :k], axis=1)
    winners = _majority_winners(classes[subsets], num_classes)
    return float(class_correct[winners].mean())


def _majority_winners(votes: np.ndarray, num_classes: int) -> np.ndarray:
    """Winning class per row of ``votes`` [S, k] (class ids in sample order, -1 = no vote); no votes -> -1."""
    num_subsets, k = votes.shape
    rows = np.repeat(np.arange(num_subsets), k)
    flat = votes.reshape(-1)
    voting = flat >= 0
    counts = np.zeros((num_subsets, num_classes), dtype=np.int64)
    np.add.at(counts, (rows[voting], flat[voting]), 1)
    first_position = np.full((num_subsets, num_classes), k, dtype=np.int64)
    positions = np.tile(np.arange(k), num_subsets)
    np.minimum.at(first_position, (rows[voting], flat[voting]), positions[voting])
    # More votes first; among equal counts the class seen earlier (smaller first position) wins.
    score = counts * (k + 1) + (k - first_position)
    winners = score.argmax(axis=1)
    winners[counts.max(axis=1) == 0] = -1
    return winners


def bootstrap_ci(
    per_problem_values: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean over problems.

    Problems are resampled with replacement ``resamples`` times with a ``seed``-ed generator (so the
    interval is reproducible); the interval is the ``(1-confidence)/2`` and ``(1+confidence)/2``
    quantiles of the resampled means.
    """
    values = np.asarray(per_problem_values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty flat list of per-problem values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    # Chunks keep the index matrix near 4M entries however many problems there are.
    chunk = max(1, 4_000_000 // values.size)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = values[rng.integers(0, values.size, size=(stop - start, values.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _equal(a: Any, b: Any) -> bool:
    return a == b
