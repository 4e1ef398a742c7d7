"""Loss aggregations (:data:`LOSS_AGGREGATIONS`, :func:`aggregate_loss`): per-token losses ``[B, T]`` to a scalar."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rlvr.registry import Registry

# (loss [B, T] already zero where masked, mask [B, T], norm_len, denominator) -> scalar
LossAggregation = Callable[[Tensor, Tensor, float, float | None], Tensor]

LOSS_AGGREGATIONS: Registry[LossAggregation] = Registry(
    "loss aggregation", package="rlvr.algorithms", entry_point_group="rlvr.loss_aggregations"
)


def aggregate_loss(
    loss_mat: Tensor,
    mask: Tensor,
    agg: str = "token-mean",
    *,
    norm_len: float | None = None,
    denominator: float | None = None,
) -> Tensor:
    """Reduce per-token losses ``[B, T]`` over the tokens where ``mask`` is 1 with aggregation ``agg``.

    ``norm_len`` is the constant of ``seq-mean-token-sum-norm`` (Dr. GRPO). It defaults to ``T``, which is
    only constant when every batch is padded to the same length: the trainer passes
    ``rollout.max_new_tokens``.

    ``denominator`` replaces the batch's own count (masked tokens for ``token-mean``, non-empty sequences
    for the ``seq-mean-*`` modes). With gradient accumulation, pass the count over the whole mini-batch to
    every micro-batch so that the micro-batch losses sum to the mini-batch loss. An empty mask gives 0.
    """
    if loss_mat.shape != mask.shape:
        raise ValueError(f"loss {tuple(loss_mat.shape)} and mask {tuple(mask.shape)} must have the same shape [B, T]")
    if norm_len is None:
        norm_len = float(mask.shape[-1])
    if norm_len <= 0:
        raise ValueError(f"norm_len must be positive, got {norm_len}; pass the maximum response length")
    # where(), not loss * mask: a non-finite value at a padded position must not turn the sum into NaN.
    masked = torch.where(mask.bool(), loss_mat, 0.0)
    return LOSS_AGGREGATIONS.get(agg)(masked, mask.to(loss_mat.dtype), norm_len, denominator)


def _safe_divide(total: Tensor, count: Tensor | float) -> Tensor:
    # A zero count means an empty mask, where the total is 0 too: the loss is 0, not NaN.
    return total / torch.as_tensor(count, dtype=total.dtype, device=total.device).clamp(min=1.0)


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(loss_mat: Tensor, mask: Tensor, norm_len: float, denominator: float | None) -> Tensor:
    """DAPO token-level loss: ``sum(loss * mask) / sum(mask)`` over every token of the batch."""
    return _safe_divide(loss_mat.sum(), mask.sum() if denominator is None else denominator)


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(loss_mat: Tensor, mask: Tensor, norm_len: float, denominator: float | None) -> Tensor:
    """GRPO paper: mean over sequences of each sequence's mean token loss (empty sequences skipped)."""
    tokens = mask.sum(dim=-1)
    per_sequence = loss_mat.sum(dim=-1) / tokens.clamp(min=1.0)
    return _safe_divide(per_sequence.sum(), (tokens > 0).sum() if denominator is None else denominator)


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss_mat: Tensor, mask: Tensor, norm_len: float, denominator: float | None) -> Tensor:
    """Dr. GRPO: mean over sequences of ``sum_t loss / norm_len`` (a constant, not the sequence length)."""
    tokens = mask.sum(dim=-1)
    per_sequence = loss_mat.sum(dim=-1) / norm_len
    return _safe_divide(per_sequence.sum(), (tokens > 0).sum() if denominator is None else denominator)
