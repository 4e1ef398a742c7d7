"""Advantage estimators (:data:`ADVANTAGE_ESTIMATORS`, :func:`compute_advantages`) and DAPO dynamic sampling.

Shapes: ``N`` samples in contiguous groups of ``group_size`` (sample ``i`` belongs to group ``i // group_size``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from rlvr.algorithms._shared import _by_group
from rlvr.registry import Registry

STD_EPS = 1e-6

AdvantageEstimator = Callable[..., Tensor]  # (grouped rewards [G, S]) -> [G, S]; see marked() for the others
F = TypeVar("F", bound=Callable[..., Tensor])

ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry(
    "advantage estimator", package="rlvr.algorithms", entry_point_group="rlvr.advantage_estimators"
)


def marked(*, greedy_baseline: bool = False, token_level: bool = False) -> Callable[[F], F]:
    """Decorator: what an estimator takes beyond the grouped rewards, as attributes the sampler and trainer read
    (never its name). ``greedy_baseline``: ``(grouped, baseline)``, the reward of one greedy sample of each
    prompt, which the sampler then draws (ReMax). ``token_level``: per-token advantages from a value model
    (GAE), computed by :mod:`rlvr.critic`, not by :func:`compute_advantages`."""

    def mark(estimator: F) -> F:
        estimator.greedy_baseline = greedy_baseline  # type: ignore[attr-defined]
        estimator.token_level = token_level  # type: ignore[attr-defined]
        return estimator

    return mark


def uses_greedy_baseline(estimator: str) -> bool:
    """Whether the estimator named ``estimator`` takes a greedy sample's reward per prompt (ReMax)."""
    return bool(getattr(ADVANTAGE_ESTIMATORS.get(estimator), "greedy_baseline", False))


def is_token_level(estimator: str) -> bool:
    """Whether the estimator named ``estimator`` gives per-token advantages from a value model (GAE)."""
    return bool(getattr(ADVANTAGE_ESTIMATORS.get(estimator), "token_level", False))


def compute_advantages(rewards: Tensor, group_size: int, estimator: str = "grpo", *, baseline: Tensor | None = None) -> Tensor:
    """Per-sample advantages ``[N]`` from rewards ``[N]`` in contiguous groups of ``group_size``.

    ``estimator`` is a name in :data:`ADVANTAGE_ESTIMATORS`. A group whose rewards are all equal carries no
    signal and gets exactly zero advantages (never NaN). An estimator with a greedy baseline (ReMax) takes
    ``baseline [N]``, each sample's baseline reward, and is not zeroed on such groups: its baseline is not
    the group's own rewards.
    """
    function = ADVANTAGE_ESTIMATORS.get(estimator)
    grouped = _by_group(rewards, group_size, "rewards").to(torch.float32)
    if getattr(function, "token_level", False):
        raise ValueError(f"the {estimator!r} estimator needs a value model's per-token values: the trainer computes it "
                         "with rlvr.critic (algorithm.estimator=gae), not from rewards alone")
    if getattr(function, "greedy_baseline", False):
        if baseline is None or baseline.shape != rewards.shape:
            raise ValueError(f"the {estimator!r} estimator needs baseline=, the greedy sample's reward for every sample "
                             f"{tuple(rewards.shape)}; got {None if baseline is None else tuple(baseline.shape)}")
        return function(grouped, _by_group(baseline, group_size, "baseline").to(torch.float32)).reshape(-1)
    advantages = function(grouped)
    flat_group = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)
    return advantages.masked_fill(flat_group, 0.0).reshape(-1)


def _require_group_size(grouped: Tensor, estimator: str) -> None:
    if grouped.shape[1] < 2:
        raise ValueError(
            f"the {estimator!r} estimator compares samples within a group and needs group_size >= 2, "
            f"got {grouped.shape[1]}; raise rollout.group_size or use dr_grpo / reinforce_pp_baseline"
        )


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo_advantages(grouped: Tensor) -> Tensor:
    """GRPO: ``(r - mean_group) / (std_group + 1e-6)``, std with Bessel's correction."""
    _require_group_size(grouped, "grpo")
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    return centered / (grouped.std(dim=1, keepdim=True) + STD_EPS)


@ADVANTAGE_ESTIMATORS.register("dr_grpo")
def dr_grpo_advantages(grouped: Tensor) -> Tensor:
    """Dr. GRPO: ``r - mean_group`` (no division by the std, which favours easy and hard prompts)."""
    return grouped - grouped.mean(dim=1, keepdim=True)


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo_advantages(grouped: Tensor) -> Tensor:
    """RLOO: ``r_i - mean_{j != i} r_j`` = ``G / (G - 1) * (r_i - mean_group)``."""
    _require_group_size(grouped, "rloo")
    size = grouped.shape[1]
    leave_one_out_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (size - 1)
    return grouped - leave_one_out_mean


@ADVANTAGE_ESTIMATORS.register("reinforce_pp_baseline")
def reinforce_pp_baseline_advantages(grouped: Tensor) -> Tensor:
    """REINFORCE++ with baseline: ``r - mean_group``, then divided by the batch std of those values.

    The group-centred values already have batch mean zero, so whitening is only the division by their
    std (Bessel-corrected, over samples, + 1e-6), which keeps all-equal groups at exactly zero.
    """
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if centered.numel() < 2:
        return centered
    return centered / (centered.std() + STD_EPS)


@ADVANTAGE_ESTIMATORS.register("remax")
@marked(greedy_baseline=True)
def remax_advantages(grouped: Tensor, baseline: Tensor) -> Tensor:
    """ReMax (Li et al. 2023, arXiv 2310.10505): ``A = r - r(greedy)``, the baseline the reward of the greedy
    (temperature 0) response to the same prompt, sampled by the engine in the same round and not trained on.
    ``baseline`` is ``[G, S]`` like ``grouped`` (the greedy reward repeated over the group). Needs no group:
    one sample per prompt works."""
    return grouped - baseline


def dynamic_sampling_mask(rewards: Tensor, group_size: int) -> Tensor:
    """DAPO dynamic sampling: ``bool[num_groups]``, True for groups whose rewards are not all equal."""
    grouped = _by_group(rewards, group_size, "rewards")
    return grouped.amax(dim=1) != grouped.amin(dim=1)
