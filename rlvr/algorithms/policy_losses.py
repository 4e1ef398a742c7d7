"""Policy losses: the PPO clipped surrogate (:func:`policy_loss`) and truncated importance sampling.

Shapes: ``B`` sequences by ``T`` completion tokens with a 0/1 ``mask`` over real tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.algorithms._shared import MAX_LOG_RATIO
from rlvr.algorithms.aggregation import aggregate_loss


def truncated_is_weights(trainer_logprobs: Tensor, sampler_logprobs: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights ``min(exp(trainer - sampler), cap)`` per token, without grad.

    Corrects for the sampler (vLLM) and the trainer giving slightly different probabilities to the same
    tokens: ``trainer_logprobs`` are the trainer's old-policy log-probs, ``sampler_logprobs`` the ones the
    engine reported. Pass the result as ``is_weights`` to :func:`policy_loss`.
    """
    if cap <= 0:
        raise ValueError(f"the truncated importance-sampling cap must be positive, got {cap}")
    log_ratio = (trainer_logprobs.detach() - sampler_logprobs.detach()).clamp(max=MAX_LOG_RATIO)
    return log_ratio.exp().clamp(max=cap)


# Metric names of policy_loss in the order it computes them, with their values when the mask is empty.
_NO_TOKEN_LOSS_METRICS = {
    "clip_frac_low": 0.0,
    "clip_frac_high": 0.0,
    "dual_clip_frac": 0.0,
    "ratio_mean": 1.0,
    "ratio_max": 1.0,
    "ratio_min": 1.0,
    "approx_kl": 0.0,
    "num_tokens": 0.0,
}


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    norm_len: float | None = None,
    denominator: float | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate loss with decoupled clip range, optional dual clip and IS weights.

    Per token, with ``ratio = exp(logprobs - old_logprobs)`` and advantage ``A``::

        loss = max(-A * ratio, -A * clamp(ratio, 1 - clip_low, 1 + clip_high))
        if dual_clip and A < 0: loss = min(loss, -A * dual_clip)
        loss = loss * is_weights                      # truncated IS, if given

    then reduced with :func:`aggregate_loss` (``agg``, ``norm_len``, ``denominator``). ``clip_high >
    clip_low`` is DAPO's clip-higher. ``advantages`` is ``[B]`` (one per sequence) or ``[B, T]``.

    Metrics (floats, over masked tokens): ``clip_frac_low`` (A < 0 and ratio < 1 - clip_low),
    ``clip_frac_high`` (A > 0 and ratio > 1 + clip_high), ``dual_clip_frac`` (A < 0 and ratio >
    dual_clip), i.e. where the clip is active and the token gives no gradient; ``ratio_mean/max/min``
    (1.0 with no tokens); ``approx_kl``: mean of the k3 estimator ``(ratio - 1) - log(ratio)`` of
    KL(old || new); ``num_tokens``.
    """
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape or logprobs.dim() != 2:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must all have the same shape [B, T]"
        )
    if not (0.0 <= clip_low < 1.0 and clip_high >= 0.0):
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got clip_low={clip_low}, clip_high={clip_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be greater than 1 (e.g. 3.0), got {dual_clip}; use null to turn it off")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    advantages = advantages.detach().to(logprobs.dtype).expand_as(logprobs)

    log_ratio = (logprobs - old_logprobs.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        loss_mat = torch.where(advantages < 0, torch.minimum(loss_mat, -advantages * dual_clip), loss_mat)
    if is_weights is not None:
        loss_mat = loss_mat * is_weights.detach().to(loss_mat.dtype)
    loss = aggregate_loss(loss_mat, mask, agg, norm_len=norm_len, denominator=denominator)

    with torch.no_grad():
        active = mask.bool()
        token_ratio, token_adv, token_log_ratio = ratio[active].float(), advantages[active], log_ratio[active].float()
        if token_ratio.numel() == 0:
            return loss, dict(_NO_TOKEN_LOSS_METRICS)
        if dual_clip is None:
            dual_clipped = torch.zeros_like(token_ratio, dtype=torch.bool)
        else:
            dual_clipped = (token_adv < 0) & (token_ratio > dual_clip)
        stats = torch.stack(
            [
                ((token_adv < 0) & (token_ratio < 1.0 - clip_low)).float().mean(),
                ((token_adv > 0) & (token_ratio > 1.0 + clip_high)).float().mean(),
                dual_clipped.float().mean(),
                token_ratio.mean(),
                token_ratio.max(),
                token_ratio.min(),
                ((token_ratio - 1.0) - token_log_ratio).mean(),
                token_ratio.new_tensor(float(token_ratio.numel())),
            ]
        ).tolist()  # one device sync for all metrics
    return loss, dict(zip(_NO_TOKEN_LOSS_METRICS, stats, strict=True))
