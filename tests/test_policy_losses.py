"""The policy-loss registry: every loss and its gradient with respect to the log-probs against values worked out
by hand from the formulas of issue 16 (the arithmetic is written out next to each expected value, from Python
floats, never from the code under test), masks and edge cases, options, and every loss training the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
import train_plugins
from safetensors.torch import load_file

from rlvr import config, preflight
from rlvr.algorithms import (
    POLICY_LOSSES,
    compute_policy_loss,
    policy_loss,
    policy_loss_aggregation,
    policy_loss_options,
)
from rlvr.config import ConfigError
from rlvr.registry import RegistryError
from rlvr.tracking import read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import train

LOSSES = ["cispo", "dppo", "gspo", "ppo"]


def leaf(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=True)


def loss_and_grad(name: str, logprobs: list[list[float]], old: list[list[float]], advantages, mask, **options):
    """The loss, d loss / d logprobs and the metrics of ``compute_policy_loss``."""
    logprobs_t = leaf(logprobs)
    loss, metrics = compute_policy_loss(
        name, logprobs_t, torch.tensor(old, dtype=torch.float64), torch.tensor(advantages, dtype=torch.float64),
        torch.tensor(mask, dtype=torch.float64), **{"agg": "token-mean", **options},
    )
    loss.backward()
    return loss.item(), logprobs_t.grad.tolist(), metrics


def assert_rows(actual: list[list[float]], expected: list[list[float]]) -> None:
    for got, want in zip(actual, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-9)


def test_the_registry_holds_the_four_losses_and_ppo_is_todays_policy_loss():
    assert POLICY_LOSSES.available() == LOSSES
    assert POLICY_LOSSES.get("ppo") is policy_loss
    assert policy_loss_options("gspo") == {"clip_low": 3e-4, "clip_high": 4e-4}  # the GSPO paper's, not PPO's
    assert policy_loss_options("dppo")["is_cap"] == 20.0
    assert policy_loss_aggregation("gspo", "token-mean") == "seq-mean-token-mean"
    assert policy_loss_aggregation("cispo", "seq-mean-token-sum-norm") == "token-mean"
    assert policy_loss_aggregation("ppo", "seq-mean-token-sum-norm") == "seq-mean-token-sum-norm"
    assert policy_loss_aggregation("dppo", "seq-mean-token-mean") == "seq-mean-token-mean"


def test_ppo_through_the_registry_against_hand_values():
    # ratios exp(0.4)=1.4918 (A=+1: clipped at 1.28, no gradient) and exp(-0.1)=0.904837 (A=+1: unclipped)
    loss, grad, metrics = loss_and_grad("ppo", [[-0.6, -1.1]], [[-1.0, -1.0]], [1.0], [[1, 1]], clip_low=0.2, clip_high=0.28)
    # token losses -1.28 and -0.904837; token mean
    assert loss == pytest.approx((-1.28 - math.exp(-0.1)) / 2)
    assert_rows(grad, [[0.0, -math.exp(-0.1) / 2]])  # d(-A ratio)/d logprob = -A ratio
    assert metrics["clip_frac_high"] == 0.5 and metrics["num_tokens"] == 2.0


# Three sequences for GSPO; the third has a padded position holding junk that must not count.
GSPO_LOGPROBS = [[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0], [-1.0, -1.0, 0.0]]
GSPO_OLD = [[-1.1, -1.9, -0.6], [-1.2, -0.9, 5.0], [-1.2, -0.9, 5.0]]
GSPO_MASK = [[1, 1, 1], [1, 1, 0], [1, 1, 0]]
GSPO_ADV = [1.0, -2.0, 2.0]


def test_gspo_against_hand_values():
    s0 = math.exp((0.1 - 0.1 + 0.1) / 3)  # mean log-ratio of sequence 0: 1.033895
    s1 = math.exp((0.2 - 0.1) / 2)  # sequences 1 and 2 (padding left out): 1.051271
    loss, grad, metrics = loss_and_grad("gspo", GSPO_LOGPROBS, GSPO_OLD, GSPO_ADV, GSPO_MASK, clip_low=0.04, clip_high=0.04)
    # seq 0: A=+1, s0 < 1.04 inside the range: token loss -s0, gradient -A*s0 per token
    # seq 1: A=-2: max(2*s1, 2*clip(s1)=2*1.04) = 2*s1, unclipped: gradient -A*s1 = 2*s1
    # seq 2: A=+2: max(-2*s1, -2*1.04) = -2.08, clipped: no gradient
    # per sequence: token mean, then the mean over the 3 sequences
    assert loss == pytest.approx((-s0 + 2 * s1 - 2.08) / 3, abs=1e-9)
    assert_rows(grad, [[-s0 / 3 / 3] * 3, [2 * s1 / 2 / 3] * 2 + [0.0], [0.0, 0.0, 0.0]])
    assert metrics["clip_frac_high"] == pytest.approx(2 / 7)  # the 2 tokens of seq 2 among 7
    assert metrics["clip_frac_low"] == 0.0
    assert metrics["seq_ratio_mean"] == pytest.approx((s0 + 2 * s1) / 3)
    assert metrics["seq_ratio_max"] == pytest.approx(s1) and metrics["num_tokens"] == 7.0


def test_gspo_aggregates_per_sequence_whatever_agg_says_and_defaults_to_the_paper_range():
    per_token, _, _ = loss_and_grad("gspo", GSPO_LOGPROBS, GSPO_OLD, GSPO_ADV, GSPO_MASK, clip_low=0.04, clip_high=0.04)
    forced, _, _ = loss_and_grad("gspo", GSPO_LOGPROBS, GSPO_OLD, GSPO_ADV, GSPO_MASK, clip_low=0.04, clip_high=0.04,
                                 agg="seq-mean-token-sum-norm")
    assert forced == per_token
    # with the defaults 3e-4 / 4e-4 every sequence ratio here (1.034, 1.051) is far outside: seq 0 and 2 (A>0) are
    # clipped at 1.0004 and give no gradient; seq 1 (A<0) takes max(2*s1, 2*0.9997) = 2*s1, unclipped
    s1 = math.exp(0.05)
    loss, grad, metrics = loss_and_grad("gspo", GSPO_LOGPROBS, GSPO_OLD, GSPO_ADV, GSPO_MASK)
    assert loss == pytest.approx((-1.0004 + 2 * s1 - 2 * 1.0004) / 3, abs=1e-9)
    assert_rows(grad, [[0.0] * 3, [2 * s1 / 2 / 3] * 2 + [0.0], [0.0] * 3])
    assert metrics["clip_frac_high"] == pytest.approx(5 / 7)


def test_gspo_token_advantages():
    # [B, T] advantages: sequence 0 only, ratio exp(0.05) outside 1 +- 0.01; token 0 A=+1 clipped, token 1 A=-1
    # unclipped (max(s, 0.99*1)=s): loss per token -1.01 and +s, mean over the sequence's 2 tokens
    s = math.exp((0.1 + 0.0) / 2)
    loss, grad, _ = loss_and_grad("gspo", [[-1.0, -2.0]], [[-1.1, -2.0]], [[1.0, -1.0]], [[1, 1]], clip_low=0.01, clip_high=0.01)
    assert loss == pytest.approx((-1.01 + s) / 2)
    assert_rows(grad, [[0.0, s / 2]])  # -A * s over 2 tokens


def test_cispo_against_hand_values():
    # ratios: exp(0.5)=1.648721 capped at 1 + 0.5 = 1.5; exp(-0.1)=0.904837; exp(0)=1
    w0, w1 = 1.5, math.exp(-0.1)
    loss, grad, metrics = loss_and_grad(
        "cispo", [[-1.0, -0.5], [-2.0, 0.0]], [[-1.5, -0.4], [-2.0, 0.0]], [2.0, -1.0], [[1, 1], [1, 0]], clip_high=0.5
    )
    # loss_t = -w * A * logprob: 3.0, 0.904837, -2.0; token mean over 3 tokens
    assert loss == pytest.approx((-w0 * 2 * -1.0 - w1 * 2 * -0.5 - 1.0 * -1.0 * -2.0) / 3)
    # gradient -w * A / 3: every token keeps a gradient, the capped one too
    assert_rows(grad, [[-w0 * 2 / 3, -w1 * 2 / 3], [1.0 / 3, 0.0]])
    assert metrics["is_truncated_frac"] == pytest.approx(1 / 3)


def test_cispo_optional_lower_bound():
    # ratio exp(-0.1) = 0.904837 raised to 1 - 0.05 = 0.95: loss -0.95 * 1 * (-1.0), gradient -0.95
    loss, grad, metrics = loss_and_grad("cispo", [[-1.0]], [[-0.9]], [1.0], [[1]], clip_low=0.05)
    assert loss == pytest.approx(0.95) and grad == [[pytest.approx(-0.95)]]
    assert metrics["is_truncated_frac"] == 1.0


def test_cispo_is_token_mean_whatever_agg_says():
    args = ([[-1.0, -0.5], [-2.0, 0.0]], [[-1.5, -0.4], [-2.0, 0.0]], [2.0, -1.0], [[1, 1], [1, 0]])
    assert loss_and_grad("cispo", *args, agg="seq-mean-token-mean")[0] == loss_and_grad("cispo", *args)[0]


def test_dppo_masks_by_probability_difference_against_hand_values():
    log = math.log
    old = [[log(0.5), log(0.5), log(0.5), log(0.01), log(0.001)]]
    new = [[log(0.8), log(0.6), log(0.25), log(0.3), log(0.05)]]
    advantages = [[1.0, 1.0, -1.0, -1.0, 1.0]]
    loss, grad, metrics = loss_and_grad("dppo", new, old, advantages, [[1] * 5], clip_low=0.2, clip_high=0.2)
    # t0: A>0, p - p_old = 0.3 > 0.2: masked. t1: A>0, +0.1: kept, ratio 1.2.
    # t2: A<0, -0.25 < -0.2: masked. t3: A<0, +0.29 (moving against A is not bounded): kept, ratio 30 capped at 20.
    # t4: A>0, +0.049: kept although its ratio is 50 (PPO would clip it), capped at 20.
    # loss_t = -min(ratio, 20) * A * logprob, token mean over 5
    assert loss == pytest.approx((-1.2 * log(0.6) + 20 * log(0.3) - 20 * log(0.05)) / 5)
    assert_rows(grad, [[0.0, -1.2 / 5, 0.0, 20 / 5, -20 / 5]])
    assert metrics["masked_frac_high"] == pytest.approx(1 / 5)
    assert metrics["masked_frac_low"] == pytest.approx(1 / 5)
    assert metrics["is_truncated_frac"] == pytest.approx(2 / 5)


def test_dppo_follows_agg_and_is_cap():
    log = math.log
    # one sequence of 2 tokens, one of 1; ratios 2 (capped at 1.5) and 1; seq-mean-token-mean
    new, old = [[log(0.2), log(0.3)], [log(0.4), 0.0]], [[log(0.1), log(0.3)], [log(0.4), 0.0]]
    loss, grad, _ = loss_and_grad("dppo", new, old, [1.0, 1.0], [[1, 1], [1, 0]], is_cap=1.5, agg="seq-mean-token-mean")
    assert loss == pytest.approx(((-1.5 * log(0.2) - log(0.3)) / 2 - log(0.4)) / 2)
    assert_rows(grad, [[-1.5 / 4, -1 / 4], [-1 / 2, 0.0]])


@pytest.mark.parametrize("name", LOSSES)
def test_an_empty_mask_gives_zero_and_no_gradient(name):
    loss, grad, metrics = loss_and_grad(name, [[-1.0, -2.0]], [[-1.5, -1.0]], [1.0], [[0, 0]])
    assert loss == 0.0 and grad == [[0.0, 0.0]]
    assert metrics["num_tokens"] == 0.0 and metrics["ratio_mean"] == 1.0


@pytest.mark.parametrize("name", LOSSES)
def test_one_on_policy_token_is_the_plain_policy_gradient(name):
    # ratio 1, nothing clipped or masked: every loss's gradient is -A (PPO, GSPO: d(-A ratio); CISPO, DPPO: -1 * A)
    _, grad, metrics = loss_and_grad(name, [[-0.7]], [[-0.7]], [3.0], [[1]])
    assert grad == [[pytest.approx(-3.0)]]
    assert metrics["num_tokens"] == 1.0 and metrics["approx_kl"] == 0.0


@pytest.mark.parametrize("name", LOSSES)
def test_importance_weights_scale_every_token(name):
    args = ([[-1.0, -0.9]], [[-1.02, -0.9]], [1.0], [[1, 1]])
    plain, plain_grad, _ = loss_and_grad(name, *args)
    weighted, weighted_grad, _ = loss_and_grad(name, *args, is_weights=torch.tensor([[2.0, 2.0]], dtype=torch.float64))
    assert weighted == pytest.approx(2 * plain)
    assert_rows(weighted_grad, [[2 * g for g in plain_grad[0]]])


def test_unknown_losses_and_options_say_what_is_valid():
    with pytest.raises(RegistryError, match="Did you mean 'gspo'"):
        loss_and_grad("gpso", [[-1.0]], [[-1.0]], [1.0], [[1]])
    with pytest.raises(TypeError, match=r"clip_low=0.0003, clip_high=0.0004"):
        loss_and_grad("gspo", [[-1.0]], [[-1.0]], [1.0], [[1]], is_cap=3.0)
    with pytest.raises(ValueError, match="clip_low"):
        loss_and_grad("gspo", [[-1.0]], [[-1.0]], [1.0], [[1]], clip_low=1.5)


def test_the_config_chooses_the_loss_and_its_options():
    with pytest.raises(ConfigError, match="policy_loss"):
        config.load(TrainConfig, None, ["algorithm.policy_loss=trpo"])
    cfg = config.load(TrainConfig, None, ["algorithm.policy_loss=gspo", "algorithm.policy_loss_options={gspo: {clip_lo: 1}}"])
    assert any("no option(s) ['clip_lo']" in problem for problem in preflight.config_problems(cfg))
    cfg = config.load(TrainConfig, None, ["algorithm.policy_loss=dppo", "algorithm.policy_loss_options={dppo: {is_cap: -1}}"])
    assert any("is_cap > 0" in problem for problem in preflight.config_problems(cfg))
    cfg = config.load(TrainConfig, None, ["algorithm.policy_loss_options={ppo: {clip_low: 0.1}}"])
    assert any("algorithm.clip_low" in problem for problem in preflight.config_problems(cfg))
    # YAML reads 3e-4 as text; the loss takes it as the number it spells
    cfg = config.load(TrainConfig, None, ["algorithm.policy_loss=gspo", "algorithm.policy_loss_options={gspo: {clip_low: 3e-4}}"])
    assert not [problem for problem in preflight.config_problems(cfg) if "policy_loss" in problem]
    _, grad, _ = loss_and_grad("gspo", [[-1.0]], [[-1.0]], [1.0], [[1]], clip_low="3e-4")
    assert grad == [[pytest.approx(-1.0)]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "own_metric"),
    [("gspo", "seq_ratio_mean"), ("cispo", "is_truncated_frac"), ("dppo", "masked_frac_high")],
)
def test_every_loss_trains_the_tiny_model(name, own_metric, tiny_model_dir, tmp_path):
    # ppo, the default, trains in tests/test_train_integration.py
    # 16 samples a step in 2 mini-batches: the second is off-policy, so ratios differ from 1
    overrides = train_plugins.overrides(tiny_model_dir, tmp_path / "run", steps=2) + [f"algorithm.policy_loss={name}"]
    if name == "gspo":
        overrides.append("algorithm.policy_loss_options={gspo: {clip_low: 0.01, clip_high: 0.01}}")
    final = train(config.load(TrainConfig, None, overrides))
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["loss"]) and row["grad_norm"] > 0 and own_metric in row
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(final / "model.safetensors")
    assert any(not torch.equal(before[key], after[key]) for key in before)
