"""KL estimators against a reference model (:data:`KL_ESTIMATORS`, :func:`kl_penalty`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from rlvr.algorithms._shared import MAX_LOG_RATIO
from rlvr.registry import Registry

KLEstimator = Callable[[Tensor], Tensor]

KL_ESTIMATORS: Registry[KLEstimator] = Registry(
    "KL estimator", package="rlvr.algorithms", entry_point_group="rlvr.kl_estimators"
)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of tokens sampled from the policy.

    ``estimator`` is ``k1``, ``k2`` or ``k3`` (Schulman, "Approximating KL divergence"); the reference
    log-probs carry no gradient. Reduce it with :func:`aggregate_loss` like the policy loss.
    """
    log_ratio = logprobs - ref_logprobs.detach()
    return KL_ESTIMATORS.get(estimator)(log_ratio)


@KL_ESTIMATORS.register("k1")
def kl_k1(log_ratio: Tensor) -> Tensor:
    """k1 = ``log p - log q``: unbiased, high variance, can be negative."""
    return log_ratio


@KL_ESTIMATORS.register("k2")
def kl_k2(log_ratio: Tensor) -> Tensor:
    """k2 = ``0.5 * (log p - log q)^2``: biased, low variance, non-negative."""
    return 0.5 * log_ratio.square()


@KL_ESTIMATORS.register("k3")
def kl_k3(log_ratio: Tensor) -> Tensor:
    """k3 = ``q/p - 1 - log(q/p)``: unbiased, low variance, non-negative (log-ratio clamped at +-20)."""
    reverse = (-log_ratio).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return reverse.exp() - 1.0 - reverse
