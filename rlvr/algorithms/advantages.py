"""Advantage estimators (:data:`ADVANTAGE_ESTIMATORS`, :func:`compute_advantages`) and DAPO dynamic sampling.

Shapes: ``N`` samples in contiguous groups of ``group_size`` (sample ``i`` belongs to group ``i // group_size``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rlvr.algorithms._shared import _by_group
from rlvr.registry import Registry

STD_EPS = 1e-6

AdvantageEstimator = Callable[[Tensor], Tensor]

ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")


def compute_advantages(rewards: Tensor, group_size: int, estimator: str = "grpo") -> Tensor:
    """Per-sample advantages ``[N]`` from rewards ``[N]`` in contiguous groups of ``group_size``.

    ``estimator`` is a name in :data:`ADVANTAGE_ESTIMATORS`. A group whose rewards are all equal carries no
    signal and gets exactly zero advantages (never NaN).
    """
    grouped = _by_group(rewards, group_size, "rewards").to(torch.float32)
    advantages = ADVANTAGE_ESTIMATORS.get(estimator)(grouped)
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


def dynamic_sampling_mask(rewards: Tensor, group_size: int) -> Tensor:
    """DAPO dynamic sampling: ``bool[num_groups]``, True for groups whose rewards are not all equal."""
    grouped = _by_group(rewards, group_size, "rewards")
    return grouped.amax(dim=1) != grouped.amin(dim=1)
