"""Algorithm functions against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rlvr.algorithms import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    LENGTH_SHAPERS,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    aggregate_loss,
    compute_advantages,
    dynamic_sampling_mask,
    entropy_from_logits,
    kimi_length_penalty,
    kl_penalty,
    overlong_filter_mask,
    overlong_penalty,
    policy_loss,
    shape_rewards,
    target_length_penalty,
    token_logprobs,
    truncated_is_weights,
)
from rlvr.registry import RegistryError
from rlvr.train_config import AlgorithmConfig, LengthConfig


def close(actual: torch.Tensor, expected: list[float] | float, tol: float = 1e-5) -> None:
    torch.testing.assert_close(actual.double(), torch.tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


def test_registries_hold_every_documented_name():
    assert ADVANTAGE_ESTIMATORS.available() == ["dr_grpo", "gae", "grpo", "reinforce_pp_baseline", "remax", "rloo"]
    assert POLICY_LOSSES.available() == ["cispo", "dppo", "gspo", "ppo"]
    assert LOSS_AGGREGATIONS.available() == ["seq-mean-token-mean", "seq-mean-token-sum-norm", "token-mean"]
    assert KL_ESTIMATORS.available() == ["k1", "k2", "k3"]
    assert LENGTH_SHAPERS.available() == ["kimi", "overlong_filter", "overlong_penalty", "target_length"]
    # The config's defaults must name registered entries.
    assert AlgorithmConfig().estimator in ADVANTAGE_ESTIMATORS
    assert AlgorithmConfig().loss_agg in LOSS_AGGREGATIONS
    assert AlgorithmConfig().policy_loss in POLICY_LOSSES
    assert AlgorithmConfig().kl_estimator in KL_ESTIMATORS


# --- advantages -------------------------------------------------------------------------------------


def test_grpo_advantages():
    # group [1, 0]: mean 0.5, sample std sqrt((0.25 + 0.25) / 1) = 0.707107 -> +-0.5 / 0.707107 = +-0.707106
    # group [1, 0, 0, 1] (size 4 below): mean 0.5, var (4 * 0.25) / 3 = 1/3, std 0.577350 -> +-0.866025
    close(compute_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2, "grpo"), [0.707106, -0.707106, -0.707106, 0.707106])
    close(compute_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, "grpo"), [0.866024, -0.866024, -0.866024, 0.866024])


def test_dr_grpo_advantages():
    # mean only: [1, 0, 0, 1] - 0.5 ; group [3, 5]: mean 4 -> [-1, 1]
    close(compute_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, "dr_grpo"), [0.5, -0.5, -0.5, 0.5])
    close(compute_advantages(torch.tensor([3.0, 5.0]), 2, "dr_grpo"), [-1.0, 1.0])


def test_rloo_advantages():
    # [1, 0, 0]: 1 - (0+0)/2 = 1 ; 0 - (1+0)/2 = -0.5 (twice)
    close(compute_advantages(torch.tensor([1.0, 0.0, 0.0]), 3, "rloo"), [1.0, -0.5, -0.5])


def test_reinforce_pp_baseline_advantages():
    # groups [1, 0] and [0, 0]: centred [0.5, -0.5, 0, 0]; batch std (Bessel) sqrt(0.5 / 3) = 0.408248
    # -> 0.5 / (0.408248 + 1e-6) = 1.224742 ; the all-equal group stays 0
    close(
        compute_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2, "reinforce_pp_baseline"), [1.224742, -1.224742, 0, 0]
    )


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_all_equal_groups_give_exact_zeros(estimator):
    # 0.1 is not exact in binary: a naive (r - mean) / std would give rounding noise / 1e-6 or NaN.
    advantages = compute_advantages(torch.full((6,), 0.1), 3, estimator)
    assert torch.equal(advantages, torch.zeros(6))


@pytest.mark.parametrize("estimator", ["dr_grpo", "reinforce_pp_baseline"])
def test_group_size_one_gives_zeros_where_defined(estimator):
    assert torch.equal(compute_advantages(torch.tensor([1.0, 0.0, 3.0]), 1, estimator), torch.zeros(3))


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_group_size_one_is_an_error_for_group_estimators(estimator):
    with pytest.raises(ValueError, match="group_size >= 2"):
        compute_advantages(torch.tensor([1.0, 0.0]), 1, estimator)


def test_compute_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="groups of 3"):
        compute_advantages(torch.ones(4), 3, "grpo")
    with pytest.raises(RegistryError, match="Did you mean 'grpo'"):
        compute_advantages(torch.ones(4), 2, "grp")


def test_dynamic_sampling_mask():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5])
    assert dynamic_sampling_mask(rewards, 2).tolist() == [False, True, False, False]
    assert dynamic_sampling_mask(rewards, 4).tolist() == [True, True]
    with pytest.raises(ValueError, match="groups of 3"):
        dynamic_sampling_mask(rewards, 3)


# --- policy loss ------------------------------------------------------------------------------------

LOG = math.log


def _batch():
    # Seq 0, A = +1: ratios 1.5 (above 1 + 0.28: clipped) and 1.1 (inside).
    # Seq 1, A = -1: ratios 0.5 (below 1 - 0.2: clipped) and 0.9 (masked out).
    old = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]])
    ratios = torch.tensor([[1.5, 1.1], [0.5, 0.9]])
    logprobs = (old + ratios.log()).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return logprobs, old, torch.tensor([1.0, -1.0]), mask


def test_policy_loss_token_mean_and_metrics():
    logprobs, old, adv, mask = _batch()
    loss, metrics = policy_loss(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.28, agg="token-mean")
    # per-token: max(-1.5, -1.28) = -1.28 ; max(-1.1, -1.1) = -1.1 ; max(0.5, 0.8) = 0.8 ; masked
    # token-mean = (-1.28 - 1.1 + 0.8) / 3 = -0.526667
    close(loss, -0.526667)
    assert metrics["clip_frac_high"] == pytest.approx(1 / 3)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 3)
    assert metrics["dual_clip_frac"] == 0.0
    assert metrics["ratio_mean"] == pytest.approx(3.1 / 3)  # (1.5 + 1.1 + 0.5) / 3
    assert metrics["ratio_max"] == pytest.approx(1.5)
    assert metrics["ratio_min"] == pytest.approx(0.5)
    # k3 per token (r - 1) - ln r: 0.5 - 0.405465 = 0.094535 ; 0.1 - 0.095310 = 0.004690 ;
    # -0.5 + 0.693147 = 0.193147 ; mean = 0.292372 / 3 = 0.097457
    assert metrics["approx_kl"] == pytest.approx(0.097457, abs=1e-5)
    assert metrics["num_tokens"] == 3.0


def test_policy_loss_sequence_aggregations():
    logprobs, old, adv, mask = _batch()
    kwargs = dict(clip_low=0.2, clip_high=0.28)
    # seq 0 mean (-1.28 - 1.1) / 2 = -1.19 ; seq 1 mean 0.8 / 1 -> (-1.19 + 0.8) / 2 = -0.195
    close(policy_loss(logprobs, old, adv, mask, agg="seq-mean-token-mean", **kwargs)[0], -0.195)
    # norm_len defaults to T = 2: (-2.38 / 2 + 0.8 / 2) / 2 = (-1.19 + 0.4) / 2 = -0.395
    close(policy_loss(logprobs, old, adv, mask, agg="seq-mean-token-sum-norm", **kwargs)[0], -0.395)
    # norm_len = 4: (-2.38 / 4 + 0.8 / 4) / 2 = (-0.595 + 0.2) / 2 = -0.1975
    close(policy_loss(logprobs, old, adv, mask, agg="seq-mean-token-sum-norm", norm_len=4, **kwargs)[0], -0.1975)


def test_policy_loss_gradient_is_zero_where_the_clip_binds_and_exact_elsewhere():
    # A = +1 on row 0, -1 on row 1, ratios chosen on both sides of the clip range [0.8, 1.28]:
    #   row 0: 1.5 (clip binds) | 1.1 (inside) | 0.5 (below range but A > 0: unclipped term is the max)
    #   row 1: 0.5 (clip binds) | 0.9 (inside) | 1.5 (above range but A < 0: unclipped term is the max)
    old = torch.zeros(2, 3)
    ratios = torch.tensor([[1.5, 1.1, 0.5], [0.5, 0.9, 1.5]])
    logprobs = ratios.log().requires_grad_(True)
    loss, metrics = policy_loss(
        logprobs, old, torch.tensor([1.0, -1.0]), torch.ones(2, 3), clip_low=0.2, clip_high=0.28, agg="token-mean"
    )
    loss.backward()
    # unclipped loss -A * r has d/dlogp = -A * r; token-mean divides by 6:
    #   row 0: [0, -1.1/6, -0.5/6] ; row 1: [0, 0.9/6, 1.5/6]
    close(logprobs.grad, [[0.0, -1.1 / 6, -0.5 / 6], [0.0, 0.9 / 6, 1.5 / 6]], tol=1e-6)
    assert metrics["clip_frac_high"] == pytest.approx(1 / 6)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 6)


def test_policy_loss_dual_clip_bounds_negative_advantages():
    # A = -1, ratios 5 and 2, dual_clip c = 3: max(5, 1.28) = 5 -> min(5, 3) = 3 (no gradient);
    # ratio 2: max(2, 1.28) = 2 < 3 stays, gradient -A * r = 2. A = +1 at ratio 5: -1.28, dual clip unused.
    old = torch.zeros(2, 2)
    logprobs = torch.tensor([[5.0, 2.0], [5.0, 1.0]]).log().requires_grad_(True)
    adv = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])  # token-level advantages [B, T]
    loss, metrics = policy_loss(
        logprobs, old, adv, torch.ones(2, 2), clip_low=0.2, clip_high=0.28, dual_clip=3.0, agg="token-mean"
    )
    # tokens: 3, 2, -1.28, -1 -> mean (3 + 2 - 1.28 - 1) / 4 = 0.68
    close(loss, 0.68)
    loss.backward()
    # grads / 4: [0, 2/4], [0 (clipped high), -1/4]
    close(logprobs.grad, [[0.0, 0.5], [0.0, -0.25]], tol=1e-6)
    assert metrics["dual_clip_frac"] == pytest.approx(0.25)
    assert metrics["clip_frac_high"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="greater than 1"):
        policy_loss(logprobs, old, adv, torch.ones(2, 2), clip_low=0.2, clip_high=0.2, dual_clip=0.5)


def test_policy_loss_importance_weights_scale_each_token():
    # ratios 1 everywhere, A = +1: per-token loss -1 ; weights [0.5, 2] -> (-0.5 - 2) / 2 = -1.25
    loss, _ = policy_loss(
        torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
        clip_low=0.2, clip_high=0.2, is_weights=torch.tensor([[0.5, 2.0]]),
    )  # fmt: skip
    close(loss, -1.25)


def test_truncated_is_weights():
    # trainer 0.3 vs sampler 0.1 -> ratio 3, capped at 2 ; trainer 0.1 vs sampler 0.2 -> 0.5
    weights = truncated_is_weights(torch.tensor([LOG(0.3), LOG(0.1)]), torch.tensor([LOG(0.1), LOG(0.2)]), cap=2.0)
    close(weights, [2.0, 0.5])
    with pytest.raises(ValueError, match="positive"):
        truncated_is_weights(torch.zeros(1), torch.zeros(1), cap=0.0)


def test_policy_loss_empty_mask_is_zero_not_nan():
    logprobs = torch.zeros(2, 3, requires_grad=True)
    for agg in LOSS_AGGREGATIONS.available():
        loss, metrics = policy_loss(
            logprobs, torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3), clip_low=0.2, clip_high=0.28, agg=agg
        )
        loss.backward()
        assert loss.item() == 0.0
        assert torch.equal(logprobs.grad, torch.zeros(2, 3))
        assert metrics["num_tokens"] == 0.0 and metrics["ratio_mean"] == 1.0 and metrics["clip_frac_low"] == 0.0
        logprobs.grad = None


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_with_a_shared_denominator_sum_to_the_full_batch_loss(agg):
    torch.manual_seed(0)
    loss_mat = torch.randn(4, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.float32)
    full = aggregate_loss(loss_mat, mask, agg, norm_len=5)
    denominator = mask.sum().item() if agg == "token-mean" else 4.0
    parts = [
        aggregate_loss(loss_mat[rows], mask[rows], agg, norm_len=5, denominator=denominator)
        for rows in (slice(0, 1), slice(1, 4))
    ]
    close(parts[0] + parts[1], full.item())


def test_aggregate_loss_hand_computed():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    close(aggregate_loss(loss_mat, mask, "token-mean"), 7 / 3)  # (1 + 2 + 4) / 3
    close(aggregate_loss(loss_mat, mask, "seq-mean-token-mean"), 2.75)  # (1.5 + 4) / 2
    close(aggregate_loss(loss_mat, mask, "seq-mean-token-sum-norm", norm_len=10), 0.35)  # (3/10 + 4/10) / 2
    with pytest.raises(ValueError, match="same shape"):
        aggregate_loss(loss_mat, mask[:, :2], "token-mean")


def test_aggregate_loss_ignores_non_finite_values_at_masked_positions():
    loss_mat = torch.tensor([[1.0, math.inf], [3.0, math.nan]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    for agg in LOSS_AGGREGATIONS.available():
        assert torch.isfinite(aggregate_loss(loss_mat, mask, agg))
    close(aggregate_loss(loss_mat, mask, "token-mean"), 2.0)  # (1 + 3) / 2


# --- KL, entropy, log-probs -------------------------------------------------------------------------


def test_kl_estimators_hand_computed():
    # p = 0.5 (policy), q = 0.25 (reference): log(p/q) = ln 2 = 0.693147
    logp, ref = torch.tensor([LOG(0.5)]), torch.tensor([LOG(0.25)])
    close(kl_penalty(logp, ref, "k1"), [0.693147])
    close(kl_penalty(logp, ref, "k2"), [0.240227])  # 0.5 * 0.693147^2
    close(kl_penalty(logp, ref, "k3"), [0.193147])  # q/p - 1 - ln(q/p) = 0.5 - 1 + 0.693147
    for name in ("k1", "k2", "k3"):
        close(kl_penalty(logp, logp, name), [0.0])


def test_entropy_from_logits_hand_computed_and_stable():
    # uniform over 4: ln 4 = 1.386294 ; p = [1/4, 3/4]: 0.25 ln 4 + 0.75 ln(4/3) = 0.346574 + 0.215762
    close(entropy_from_logits(torch.zeros(4)), 1.386294)
    close(entropy_from_logits(torch.tensor([0.0, LOG(3.0)])), 0.562335)
    close(entropy_from_logits(torch.tensor([1000.0, 1000.0 + LOG(3.0)])), 0.562335, tol=1e-4)
    # a -inf logit is a token of probability 0 and contributes nothing (not NaN)
    close(entropy_from_logits(torch.tensor([0.0, LOG(3.0), -math.inf])), 0.562335)


def test_token_logprobs_hand_computed():
    # softmax([0, ln 3]) = [1/4, 3/4]
    logits = torch.tensor([[[0.0, LOG(3.0)], [0.0, LOG(3.0)]]])
    close(token_logprobs(logits, torch.tensor([[1, 0]])), [[LOG(0.75), LOG(0.25)]])


@pytest.mark.parametrize("chunk_rows", [1, 2, 1024])
def test_token_logprobs_and_entropy_match_autograd_on_sliced_logits(chunk_rows):
    torch.manual_seed(0)
    full = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 5, (2, 4))

    def completion(logits):
        return logits[:, 1:5]  # a non-contiguous slice, as the trainer takes completion positions

    assert torch.autograd.gradcheck(lambda z: token_logprobs(completion(z), ids, chunk_rows), (full,))
    assert torch.autograd.gradcheck(lambda z: entropy_from_logits(completion(z), chunk_rows), (full,))
    reference = torch.log_softmax(completion(full), -1).gather(-1, ids[..., None]).squeeze(-1)
    close(token_logprobs(completion(full), ids, chunk_rows), reference.tolist(), tol=1e-12)


def test_token_logprobs_on_bfloat16_is_fp32_and_matches():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 50).to(torch.bfloat16).requires_grad_(True)
    ids = torch.randint(0, 50, (2, 3))
    ours = token_logprobs(logits, ids, chunk_rows=2)
    assert ours.dtype == torch.float32
    reference = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    ours.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


# --- length regularization --------------------------------------------------------------------------


def test_overlong_penalty():
    # max_len 100, buffer 20: free up to 80, then -(len - 80) / 20: 90 -> -0.5, 100 -> -1, beyond -1
    close(overlong_penalty(torch.tensor([50, 80, 90, 100, 120]), 100, 20), [0.0, 0.0, -0.5, -1.0, -1.0])
    close(overlong_penalty(torch.tensor([85]), 100, 20, factor=0.5), [-0.125])  # -(5/20) * 0.5
    with pytest.raises(ValueError, match="buffer_len"):
        overlong_penalty(torch.tensor([1]), 100, 0)


def test_overlong_filter_mask():
    assert overlong_filter_mask(torch.tensor([False, True, False])).tolist() == [True, False, True]


def test_kimi_length_penalty():
    # group 1 lengths [10, 20, 30]: lambda = 0.5 - (len - 10) / 20 = [0.5, 0, -0.5]
    #   correct [T, T, F] -> [0.5, 0, min(0, -0.5) = -0.5]
    # group 2 lengths [10, 20, 30], correct [F, T, F] -> [min(0, 0.5) = 0, 0, -0.5]
    # group 3 lengths all 15 -> 0
    correct = torch.tensor([True, True, False, False, True, False, True, False, True])
    lengths = torch.tensor([10, 20, 30, 10, 20, 30, 15, 15, 15])
    close(kimi_length_penalty(correct, lengths, 3), [0.5, 0.0, -0.5, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="same shape"):
        kimi_length_penalty(correct[:3], lengths, 3)


def test_target_length_penalty():
    # -0.01 * |100 - len|: 50 -> -0.5, 100 -> 0, 130 -> -0.3 ; per-sample targets [40, 100, 130]
    close(target_length_penalty(torch.tensor([50, 100, 130]), 100, 0.01), [-0.5, 0.0, -0.3])
    close(target_length_penalty(torch.tensor([50, 100, 130]), torch.tensor([40, 100, 130]), 0.01), [-0.1, 0, 0])


def test_shape_rewards_combines_every_configured_shaper():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    lengths = torch.tensor([10, 30, 95, 100])
    truncated = torch.tensor([False, False, False, True])
    shaped, keep = shape_rewards(
        rewards, lengths, truncated, 2, max_len=100,
        overlong_buffer=10, overlong_factor=1.0, overlong_filter=True,
        kimi_coef=0.1, target_length=50, target_coef=0.001,
    )  # fmt: skip
    # overlong (free up to 90): [0, 0, -0.5, -1]
    # kimi * 0.1: group [10, 30] correct [T, F] -> lambda [0.5, -0.5] -> [0.05, -0.05]; group [95, 100] same
    # target: -0.001 * |50 - len| = [-0.04, -0.02, -0.045, -0.05]
    # 1 + 0 + 0.05 - 0.04 = 1.01 ; 0 + 0 - 0.05 - 0.02 = -0.07 ; 1 - 0.5 + 0.05 - 0.045 = 0.505 ;
    # 0 - 1 - 0.05 - 0.05 = -1.1
    close(shaped, [1.01, -0.07, 0.505, -1.1])
    assert keep.tolist() == [True, True, True, False]


def test_shape_rewards_defaults_are_off_and_take_the_config_fields():
    rewards = torch.tensor([1.0, 0.0])
    lengths, truncated = torch.tensor([100, 5]), torch.tensor([True, False])
    shaped, keep = shape_rewards(rewards, lengths, truncated, 2, max_len=100, **dataclasses.asdict(LengthConfig()))
    assert torch.equal(shaped, rewards) and keep.tolist() == [True, True]
    with pytest.raises(TypeError, match="overlong_bufer"):
        shape_rewards(rewards, lengths, truncated, 2, max_len=100, overlong_bufer=10)


def test_shape_rewards_uses_explicit_correctness_for_kimi():
    # rewards in {-1, 1} but the caller says sample 0 is wrong: lambda [0.5, -0.5] -> [min(0, 0.5), -0.5]
    shaped, _ = shape_rewards(
        torch.tensor([1.0, -1.0]), torch.tensor([10, 20]), torch.tensor([False, False]), 2,
        max_len=100, kimi_coef=1.0, correct=torch.tensor([False, False]),
    )  # fmt: skip
    close(shaped, [1.0, -1.5])


def test_docs_table_names_every_registered_algorithm():
    from pathlib import Path

    docs = (Path(__file__).parents[1] / "docs" / "algorithms.md").read_text()
    table = docs[docs.index("### Every registered name") : docs.index("**Plug-ins.**")]
    for registry in (ADVANTAGE_ESTIMATORS, POLICY_LOSSES, LOSS_AGGREGATIONS, KL_ESTIMATORS, LENGTH_SHAPERS):
        for name in registry.available():
            assert f"| `{name}` |" in table, f"docs/algorithms.md has no row for the {registry.kind} {name!r}"
