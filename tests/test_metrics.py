"""Evaluation statistics against hand-computed values and exact enumeration."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from rlvr import algorithms
from rlvr.metrics import MAJ_EXACT_LIMIT, answer_classes, avg_at_n, bootstrap_ci, maj_at_k, pass_at_k

# --- pass@k -----------------------------------------------------------------------------------------


def test_pass_at_k_hand_computed():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # k=1 is the plain accuracy c/n = 3/10
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # n=4, c=1, k=3: 1 - C(3,3)/C(4,3) = 1 - 1/4
    assert pass_at_k(4, 1, 3) == pytest.approx(0.75)


def test_pass_at_k_edges():
    assert pass_at_k(8, 0, 4) == 0.0  # c=0: no subset has a correct sample
    assert pass_at_k(8, 8, 4) == 1.0  # c=n
    assert pass_at_k(8, 1, 8) == 1.0  # k=n with one correct: the only subset contains it
    assert pass_at_k(8, 0, 8) == 0.0  # k=n, c=0
    assert pass_at_k(8, 5, 4) == 1.0  # n-c=3 < k=4: every 4-subset holds a correct one


def test_pass_at_k_large_n_is_stable():
    # 1 - C(999,1)/C(1000,1) = 1/1000; the binomials themselves would overflow a float at n=1000, k=500.
    assert pass_at_k(1000, 1, 1) == pytest.approx(1e-3)
    value = pass_at_k(1000, 3, 500)
    # 1 - (500*499*498)/(1000*999*998) = 1 - 124251000/997002000
    assert value == pytest.approx(1 - 124251000 / 997002000)
    assert math.isfinite(pass_at_k(100_000, 50_000, 50_000))


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"1 <= k <= n=4"):
        pass_at_k(4, 2, 5)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 2, 0)
    with pytest.raises(ValueError, match="between 0 and n"):
        pass_at_k(4, 5, 1)


def test_pass_at_k_matches_exact_enumeration_over_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            flags = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(flags, k))
                exact = Fraction(sum(any(s) for s in subsets), len(subsets))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_algorithms_reexports_the_same_pass_at_k():
    assert algorithms.pass_at_k is pass_at_k


# --- avg@n ------------------------------------------------------------------------------------------


def test_avg_at_n():
    assert avg_at_n([True, False, False, True]) == 0.5
    assert avg_at_n([False]) == 0.0
    with pytest.raises(ValueError):
        avg_at_n([])


# --- maj@k ------------------------------------------------------------------------------------------


def _same_number(a: str, b: str) -> bool:
    return Fraction(a) == Fraction(b)


def test_maj_at_k_clear_majority():
    # "4" has 2 of 3 votes and is correct.
    assert maj_at_k(["4", "4", "5"], [True, True, False], k=3) == 1.0
    assert maj_at_k(["5", "5", "4"], [False, False, True], k=3) == 0.0


def test_maj_at_k_tie_goes_to_the_earliest_answer():
    # One vote each: the answer seen first wins.
    assert maj_at_k(["5", "4"], [False, True], k=2) == 0.0
    assert maj_at_k(["4", "5"], [True, False], k=2) == 1.0


def test_maj_at_k_groups_equivalent_answers():
    answers = ["3", "1/2", "0.5"]
    correct = [False, True, True]
    # By string equality: three classes of one vote, tie -> "3" (first) -> wrong.
    assert maj_at_k(answers, correct, k=3) == 0.0
    # By value: "1/2" and "0.5" form one class of two votes -> right.
    assert maj_at_k(answers, correct, k=3, equivalent=_same_number) == 1.0
    assert answer_classes(answers, _same_number) == [0, 1, 1]


def test_maj_at_k_over_subsets_hand_enumerated():
    # answers a a b c, a correct; the 6 pairs: {0,1} a,a->a  {0,2} a,b tie->a  {0,3} a,c tie->a
    # {1,2} a,b tie->a  {1,3} a,c tie->a  {2,3} b,c tie->b(wrong)  => 5/6
    assert maj_at_k(["a", "a", "b", "c"], [True, True, False, False], k=2) == pytest.approx(5 / 6)
    # answers b a a c, a correct: {0,1} b,a tie->b  {0,2} b  {0,3} b,c->b  {1,2} a  {1,3} a  {2,3} a  => 3/6
    assert maj_at_k(["b", "a", "a", "c"], [False, True, True, False], k=2) == pytest.approx(0.5)


def test_maj_at_k_missing_answers_do_not_vote():
    # k=1: each sample alone; "4" twice right, "5" wrong, None (no answer) wrong -> 2/4
    assert maj_at_k(["4", "4", "5", None], [True, True, False, False], k=1) == 0.5
    # k=2 pairs with None: {0,3} and {1,3} -> "4" alone votes -> right; {2,3} -> "5" -> wrong.
    # Others: {0,1} 4,4 right; {0,2} 4,5 tie->4 right; {1,2} tie->4 right => 5/6
    assert maj_at_k(["4", "4", "5", None], [True, True, False, False], k=2) == pytest.approx(5 / 6)
    assert maj_at_k([None, None], [False, False], k=2) == 0.0


def test_maj_at_k_estimates_large_n_from_sampled_subsets():
    n, k = 30, 15
    assert math.comb(n, k) > MAJ_EXACT_LIMIT  # forces the sampled estimator
    answers = ["x"] * 20 + ["y"] * 10
    correct = [True] * 20 + [False] * 10
    # k is odd, so no ties: the vote is right when at least 8 of the 15 are "x" (hypergeometric tail).
    exact = sum(math.comb(20, x) * math.comb(10, k - x) for x in range(8, 16)) / math.comb(n, k)
    estimate = maj_at_k(answers, correct, k)
    assert estimate == pytest.approx(exact, abs=0.01)
    assert maj_at_k(answers, correct, k) == estimate  # same seed, same number


def test_maj_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one per sample"):
        maj_at_k(["a", "b"], [True], k=1)
    with pytest.raises(ValueError, match=r"1 <= k <= n=2"):
        maj_at_k(["a", "b"], [True, False], k=3)


# --- bootstrap --------------------------------------------------------------------------------------


def test_bootstrap_ci_degenerate_and_two_point_cases():
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    # Two problems 0 and 1: resampled means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% quantiles are 0 and 1.
    assert bootstrap_ci([0.0, 1.0], resamples=4000) == (0.0, 1.0)


def test_bootstrap_ci_is_reproducible_and_brackets_the_mean():
    values = np.random.default_rng(1).random(50)
    low, high = bootstrap_ci(values, seed=3)
    assert (low, high) == bootstrap_ci(values, seed=3)
    assert low < values.mean() < high


def test_bootstrap_ci_width_matches_the_normal_approximation():
    # 400 Bernoulli problems with 120 ones: p=0.3, se = sqrt(0.3*0.7/400) = 0.022913,
    # half-width of a 95% interval ~ 1.96 * 0.022913 = 0.04491.
    values = [1.0] * 120 + [0.0] * 280
    low, high = bootstrap_ci(values, resamples=4000)
    assert (high - low) / 2 == pytest.approx(0.04491, rel=0.1)
    assert (low + high) / 2 == pytest.approx(0.3, abs=0.01)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    true_mean, trials, covered = 0.3, 300, 0
    for trial in range(trials):
        values = (rng.random(60) < true_mean).astype(float)
        low, high = bootstrap_ci(values, resamples=1000, seed=trial)
        covered += low <= true_mean <= high
    # Percentile bootstrap on 60 problems runs slightly under nominal; a broken interval lands far outside.
    assert 0.90 <= covered / trials <= 0.985


def test_bootstrap_ci_rejects_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.5)
