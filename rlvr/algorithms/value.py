"""PPO with a value model: per-token rewards, generalized advantage estimation (GAE), VAPO's length-adaptive
lambda, advantage whitening and the clipped value loss, as pure functions on ``[B, T]`` tensors.

``mask`` marks the model's tokens of each completion (1), padding and tool output (0). ``values[:, t]`` is the
value model's estimate at the state that predicts completion token ``t`` (the same position whose logits give
that token's log-prob), so ``V_{t+1}`` is the value after token ``t`` was emitted. ``gae`` is registered as an
advantage estimator (token-level: :mod:`rlvr.critic` runs it with the value model).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.algorithms.advantages import ADVANTAGE_ESTIMATORS, marked
from rlvr.algorithms.aggregation import aggregate_loss

__all__ = ["gae_advantages", "last_token_rewards", "length_adaptive_lambda", "value_loss", "whiten"]

WHITEN_EPS = 1e-8


def last_token_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """``[B, T]`` token rewards: each sample's reward ``rewards[b]`` on its last model token, 0 elsewhere
    (a sample without model tokens gets none)."""
    if rewards.shape != mask.shape[:1] or mask.dim() != 2:
        raise ValueError(f"rewards {tuple(rewards.shape)} must be [B] for a mask [B, T], got mask {tuple(mask.shape)}")
    active = mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(active, positions, -1).amax(dim=1)
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    has_tokens = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has_tokens]
    token_rewards[rows, last[has_tokens]] = rewards.to(torch.float32)[has_tokens]
    return token_rewards


@ADVANTAGE_ESTIMATORS.register("gae")
@marked(token_level=True)
@torch.no_grad()
def gae_advantages(token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float,
                   lam: float | Tensor) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, arXiv 1506.02438): ``(advantages, returns)``,
    ``[B, T]`` each, 0 where ``mask`` is 0.

    Backwards over each sequence's model tokens, with ``t'`` the next model token after ``t`` (``V_{t'} = 0``
    and ``A_{t'} = 0`` after the last one)::

        delta_t = r_t + gamma * V_{t'} - V_t
        A_t     = delta_t + gamma * lam * A_{t'}
        R_t     = A_t + V_t                      (the value model's target)

    Masked positions (padding, a tool's output inside a response) are skipped, not treated as steps: the
    value and advantage of the next model token pass through them unchanged. ``lam`` is one float or a ``[B]``
    tensor (a lambda per sequence: VAPO's :func:`length_adaptive_lambda`). With ``gamma = lam = 1`` and the
    reward on the last token, ``A_t = R - V_t``. Nothing here carries a gradient.
    """
    if token_rewards.shape != values.shape or values.shape != mask.shape or mask.dim() != 2:
        raise ValueError(f"token_rewards {tuple(token_rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must all be [B, T]")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    lam = torch.as_tensor(lam, dtype=torch.float32, device=values.device).expand(mask.shape[0])
    if bool(((lam < 0) | (lam > 1)).any()):
        raise ValueError(f"lambda must be in [0, 1], got {lam.tolist()}")
    rewards, values, active = token_rewards.float(), values.detach().float(), mask.bool()
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(mask.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        here = active[:, t]
        advantages[:, t] = torch.where(here, advantage, 0.0)
        next_value = torch.where(here, values[:, t], next_value)
        next_advantage = torch.where(here, advantage, next_advantage)
    returns = torch.where(active, advantages + values, 0.0)
    return advantages, returns


def length_adaptive_lambda(lengths: Tensor, alpha: float) -> Tensor:
    """VAPO's length-adaptive GAE lambda (Yue et al. 2025, arXiv 2504.05118) per sequence ``[B]``:
    ``lam = 1 - 1 / (alpha * length)``, clamped to ``[0, 1]`` (a sequence shorter than ``1 / alpha`` tokens
    gets 0, one-step TD errors). Longer responses get a lambda nearer 1, so the bias of bootstrapping from the
    value does not pile up over their many tokens. VAPO uses ``alpha = 0.05``."""
    if alpha <= 0:
        raise ValueError(f"the length-adaptive lambda's alpha must be positive (VAPO: 0.05), got {alpha}")
    lengths = lengths.to(torch.float32)
    return (1.0 - 1.0 / (alpha * lengths.clamp(min=1.0))).clamp(0.0, 1.0)


def whiten(advantages: Tensor, mask: Tensor, pool: Tensor | None = None) -> Tensor:
    """``(A - mean) / (std + 1e-8)`` over the tokens where ``mask`` is 1 (Bessel-corrected std), 0 elsewhere;
    fewer than 2 tokens are only centred. ``pool``: the values the mean and std are taken over instead (the
    whole batch's tokens, when this is one rank's share of it)."""
    active = mask.bool()
    tokens = advantages[active] if pool is None else pool.to(advantages)
    if tokens.numel() < 2:
        return torch.where(active, advantages - (tokens.mean() if tokens.numel() else 0.0), 0.0)
    return torch.where(active, (advantages - tokens.mean()) / (tokens.std() + WHITEN_EPS), 0.0)


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip: float | None,
               agg: str = "token-mean", denominator: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped value loss per token, reduced with :func:`aggregate_loss` (``agg``, ``denominator``)::

        V_clip = V_old + clamp(V - V_old, -clip, clip)
        loss   = 0.5 * max((V - R)^2, (V_clip - R)^2)        (clip None: 0.5 * (V - R)^2)

    ``old_values`` are the values the advantages were computed with, ``returns`` the GAE targets (neither
    carries a gradient). Metrics over masked tokens: ``value/clip_frac`` (the clipped term is the larger: the
    token gives no gradient), ``value/mean``, ``value/error`` (mean ``|V - R|``).
    """
    if values.shape != old_values.shape or values.shape != returns.shape or values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)}, old_values {tuple(old_values.shape)}, returns "
                         f"{tuple(returns.shape)} and mask {tuple(mask.shape)} must all be [B, T]")
    if clip is not None and clip <= 0:
        raise ValueError(f"value_clip must be positive (e.g. 0.2) or null, got {clip}")
    old_values, returns = old_values.detach(), returns.detach()
    unclipped = (values - returns).square()
    if clip is None:
        loss_mat, clipped_wins = 0.5 * unclipped, torch.zeros_like(unclipped, dtype=torch.bool)
    else:
        clipped = (old_values + (values - old_values).clamp(-clip, clip) - returns).square()
        loss_mat, clipped_wins = 0.5 * torch.maximum(unclipped, clipped), clipped > unclipped
    loss = aggregate_loss(loss_mat, mask, agg, denominator=denominator)
    with torch.no_grad():
        active = mask.bool()
        if not bool(active.any()):
            return loss, {"value/clip_frac": 0.0, "value/mean": 0.0, "value/error": 0.0}
        stats = torch.stack([clipped_wins[active].float().mean(), values[active].float().mean(),
                             (values - returns)[active].abs().float().mean()]).tolist()
    return loss, dict(zip(("value/clip_frac", "value/mean", "value/error"), stats, strict=True))
