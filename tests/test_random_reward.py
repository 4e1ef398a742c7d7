"""The random-reward control verifier: its rate, its blindness to correctness, its determinism."""

from __future__ import annotations

import math

import pytest

import verifiers
from rlvr import config
from rlvr.sampling import Rewarder
from rlvr.train_config import TrainConfig
from rlvr.trainer import verifier_options
from verifiers.random_reward import RandomReward

SAMPLES = 4000


def binomial_bound(n: int, p: float, sigmas: float = 4.5) -> float:
    """Half-width of an interval that a Binomial(n, p) count falls outside with probability < 1e-5."""
    return sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_rate_is_p_within_a_binomial_bound(p):
    checker = verifiers.get("random", p=p, seed=7)
    completions = [f"I think it is {i}. \\boxed{{{i % 13}}}" for i in range(SAMPLES)]
    paid = sum(checker.verify(text, str(i % 5)).correct for i, text in enumerate(completions))
    assert abs(paid - SAMPLES * p) <= binomial_bound(SAMPLES, p)


def test_reward_is_blind_to_correctness():
    # Half the completions are right (the math verifier agrees), half wrong: both halves are paid at rate p.
    math_checker = verifiers.get("math")
    coin = verifiers.get("random", p=0.3, seed=1)
    right, wrong = [], []
    for i in range(SAMPLES):
        reference = str(i)
        answer = i if i % 2 else i + 1
        completion = f"Adding up, the answer is \\boxed{{{answer}}}."
        assert math_checker.verify(completion, reference).correct == bool(i % 2)
        (right if i % 2 else wrong).append(coin.verify(completion, reference).reward)
    math_checker.close()
    half = SAMPLES // 2
    for rewards in (right, wrong):
        assert abs(sum(rewards) - half * 0.3) <= binomial_bound(half, 0.3)


def test_coins_are_deterministic_and_seeded():
    first = verifiers.get("random", p=0.5, seed=3)
    again = verifiers.get("random", p=0.5, seed=3)
    other = verifiers.get("random", p=0.5, seed=4)
    texts = [f"completion {i}" for i in range(400)]
    a = [first.verify(t, "1").reward for t in texts]
    assert a == [again.verify(t, "1").reward for t in texts]
    assert a == [v.reward for v in first.verify_batch(texts, ["1"] * len(texts), workers=4)]  # threads agree
    b = [other.verify(t, "1").reward for t in texts]
    # Two seeds agree on a coin half the time: 400 coins disagree on about 200, far from 0.
    assert sum(x != y for x, y in zip(a, b, strict=True)) > 120


def test_verdict_reports_the_coin():
    verdict = RandomReward(p=1.0).verify("anything", "2")
    assert (verdict.reward, verdict.correct, verdict.reason) == (1.0, True, "paid")
    verdict = RandomReward(p=0.0).verify("anything", "2")
    assert (verdict.reward, verdict.correct, verdict.reason) == (0.0, False, "not paid")


def test_p_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
        RandomReward(p=1.5)


def test_training_config_overrides_the_verifier_and_passes_its_options():
    cfg = config.load(TrainConfig, None, ["verifier.name=random", "verifier.options={random: {p: 0.25, seed: 9}}"])
    assert cfg.verifier.name == "random"
    with Rewarder(verifier_options(cfg), 1, cfg.verifier.options) as rewarder:
        checker = rewarder.verifier("random")
        assert (checker.p, checker.seed) == (0.25, 9)


def test_unknown_verifier_name_and_option_are_refused():
    with pytest.raises(config.ConfigError, match="random"):  # the message lists the valid names
        config.load(TrainConfig, None, ["verifier.name=coinflip"])
    with pytest.raises(ValueError, match="has no option 'q'; its options: p, seed"):
        Rewarder({}, 1, {"random": {"q": 0.5}})


def test_every_verifier_option_reaches_its_verifier():
    cfg = config.load(TrainConfig, None, [
        "verifier.time_limit=3.5", "verifier.require_boxed=true", "verifier.code_time_limit=4",
        "verifier.code_memory_mb=256", "verifier.sandbox=bwrap", "verifier.options={math: {rel_tol: 0.001}}",
    ])
    with Rewarder(verifier_options(cfg), 1, cfg.verifier.options) as rewarder:
        math_checker = rewarder.verifier("math")
        code_checker = rewarder.verifier("code")
        assert (math_checker.time_limit, math_checker.require_boxed, math_checker.rel_tol) == (3.5, True, 0.001)
        assert (code_checker.timeout, code_checker.memory_mb) == (4.0, 256)
        assert type(code_checker.sandbox).__name__.lower().startswith("bwrap")
        math_checker.close()
