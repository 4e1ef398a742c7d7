"""Policy losses (:data:`POLICY_LOSSES`, :func:`compute_policy_loss`): ``ppo``, ``gspo``, ``cispo``, ``dppo``,
and truncated importance sampling for the sampler/trainer mismatch.

Every loss is a function ``(logprobs, old_logprobs, advantages, mask, *, agg, norm_len, denominator,
is_weights, **its_options) -> (loss, metrics)``; its own options are keyword arguments with defaults
(docs/algorithms.md says which are published ones). ``ratio = exp(logprobs - old_logprobs)`` per token, ``A``
the advantage (``[B]``, one per sequence, or ``[B, T]``), ``sg`` the stop-gradient. Shapes: ``B`` sequences by
``T`` completion tokens with a 0/1 ``mask`` over real tokens. Metrics always include ``num_tokens`` (the update weighs micro-batches by it) and the ratio's
``ratio_mean/max/min`` and ``approx_kl``; each loss adds the fraction of tokens its clip or mask takes out.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from rlvr.algorithms._shared import MAX_LOG_RATIO
from rlvr.algorithms.aggregation import aggregate_loss
from rlvr.registry import Registry

PolicyLoss = Callable[..., tuple[Tensor, dict[str, float]]]
F = TypeVar("F", bound=PolicyLoss)

POLICY_LOSSES: Registry[PolicyLoss] = Registry(
    "policy loss", package="rlvr.algorithms", entry_point_group="rlvr.policy_losses"
)

# Keyword arguments the update passes to every policy loss; the rest of a loss's keywords are its own options.
COMMON_ARGUMENTS = frozenset({"agg", "norm_len", "denominator", "is_weights"})


def aggregates_with(agg: str) -> Callable[[F], F]:
    """Decorator: the policy loss's definition fixes its aggregation (GSPO: per sequence, CISPO: per token), whatever
    ``algorithm.loss_agg`` says; :func:`policy_loss_aggregation` reads it (never the loss's name)."""

    def mark(loss: F) -> F:
        loss.aggregation = agg  # type: ignore[attr-defined]
        return loss

    return mark


def policy_loss_aggregation(name: str, agg: str) -> str:
    """The aggregation policy loss ``name`` reduces with: the one its definition fixes, else ``agg``. The update
    computes the micro-batch denominators with it and reduces the entropy and KL terms with it too."""
    return getattr(POLICY_LOSSES.get(name), "aggregation", None) or agg


def policy_loss_options(name: str) -> dict[str, Any]:
    """The own options of policy loss ``name`` and their defaults (None for a keyword without one)."""
    parameters = inspect.signature(POLICY_LOSSES.get(name)).parameters.values()
    return {
        parameter.name: None if parameter.default is inspect.Parameter.empty else parameter.default
        for parameter in parameters
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.name not in COMMON_ARGUMENTS
    }


def check_policy_loss_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of policy loss ``name``, numbers written as text turned into floats (YAML reads ``3e-4`` as a
    string); ``TypeError`` naming the valid options for one the loss does not take or a number that is not one."""
    valid = policy_loss_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"policy loss {name!r} has no option(s) {unknown}; its options (defaults): "
            + (", ".join(f"{key}={value}" for key, value in valid.items()) or "(none)")
        )
    parameters = inspect.signature(POLICY_LOSSES.get(name)).parameters
    checked = dict(options)
    for key, value in options.items():
        if isinstance(value, str) and "float" in str(parameters[key].annotation):
            try:
                checked[key] = float(value)
            except ValueError:
                raise TypeError(f"policy loss {name!r}: option {key} must be a number, got {value!r}") from None
    return checked


def compute_policy_loss(
    name: str, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *, agg: str, **options: Any
) -> tuple[Tensor, dict[str, float]]:
    """The policy loss registered as ``name``: ``(scalar loss, metrics)``.

    ``agg`` is the aggregation (:data:`~rlvr.algorithms.LOSS_AGGREGATIONS`), replaced by the loss's own where its
    definition fixes one (:func:`policy_loss_aggregation`). ``options``: ``norm_len``, ``denominator`` and
    ``is_weights`` (see :func:`policy_loss`) and the loss's own options (:func:`policy_loss_options`); those left
    out take the loss's defaults.
    """
    loss = POLICY_LOSSES.get(name)
    own = check_policy_loss_options(name, {key: value for key, value in options.items() if key not in COMMON_ARGUMENTS})
    return loss(logprobs, old_logprobs, advantages, mask, agg=policy_loss_aggregation(name, agg), **{**options, **own})


def truncated_is_weights(trainer_logprobs: Tensor, sampler_logprobs: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights ``min(exp(trainer - sampler), cap)`` per token, without grad.

    Corrects for the sampler (vLLM) and the trainer giving slightly different probabilities to the same
    tokens: ``trainer_logprobs`` are the trainer's old-policy log-probs, ``sampler_logprobs`` the ones the
    engine reported. Pass the result as ``is_weights`` to a policy loss; every loss multiplies its per-token
    loss by it.
    """
    if cap <= 0:
        raise ValueError(f"the truncated importance-sampling cap must be positive, got {cap}")
    log_ratio = (trainer_logprobs.detach() - sampler_logprobs.detach()).clamp(max=MAX_LOG_RATIO)
    return log_ratio.exp().clamp(max=cap)


def _token_advantages(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Check the shapes; the advantages without gradient, broadcast to ``[B, T]``."""
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape or logprobs.dim() != 2:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must all have the same shape [B, T]"
        )
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    return advantages.detach().to(logprobs.dtype).expand_as(logprobs)


def _check_clip_range(clip_low: float, clip_high: float) -> None:
    if not (0.0 <= clip_low < 1.0 and clip_high >= 0.0):
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got clip_low={clip_low}, clip_high={clip_high}")


def _log_ratio(logprobs: Tensor, old_logprobs: Tensor) -> Tensor:
    return (logprobs - old_logprobs.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


def _finish(
    loss_mat: Tensor,
    mask: Tensor,
    is_weights: Tensor | None,
    agg: str,
    norm_len: float | None,
    denominator: float | None,
) -> Tensor:
    if is_weights is not None:
        loss_mat = loss_mat * is_weights.detach().to(loss_mat.dtype)
    return aggregate_loss(loss_mat, mask, agg, norm_len=norm_len, denominator=denominator)


@torch.no_grad()
def _token_metrics(mask: Tensor, log_ratio: Tensor, fractions: dict[str, Tensor]) -> dict[str, float]:
    """Over the tokens of ``mask``: the share of each boolean ``[B, T]`` in ``fractions``, then ``ratio_mean/max/
    min``, ``approx_kl`` (mean of the k3 estimator ``(ratio - 1) - log(ratio)`` of KL(old || new)) and
    ``num_tokens``; with no token, fractions 0, ratios 1, KL 0. One device sync for all."""
    active = mask.bool()
    token_log_ratio = log_ratio[active].float()
    names = [*fractions, "ratio_mean", "ratio_max", "ratio_min", "approx_kl", "num_tokens"]
    if token_log_ratio.numel() == 0:
        return dict(zip(names, [0.0] * len(fractions) + [1.0, 1.0, 1.0, 0.0, 0.0], strict=True))
    token_ratio = token_log_ratio.exp()
    stats = torch.stack(
        [
            *(flags[active].float().mean() for flags in fractions.values()),
            token_ratio.mean(),
            token_ratio.max(),
            token_ratio.min(),
            ((token_ratio - 1.0) - token_log_ratio).mean(),
            token_ratio.new_tensor(float(token_ratio.numel())),
        ]
    ).tolist()
    return dict(zip(names, stats, strict=True))


@POLICY_LOSSES.register("ppo")
def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
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
    clip_low`` is DAPO's clip-higher (Yu et al. 2025, arXiv 2503.14476); the defaults are DAPO's 0.2 / 0.28,
    the dual clip is Ye et al. 2020 (arXiv 1912.09729); PPO: Schulman et al. 2017 (arXiv 1707.06347).
    ``advantages`` is ``[B]`` (one per sequence) or ``[B, T]``.

    Metrics (floats, over masked tokens): ``clip_frac_low`` (A < 0 and ratio < 1 - clip_low),
    ``clip_frac_high`` (A > 0 and ratio > 1 + clip_high), ``dual_clip_frac`` (A < 0 and ratio >
    dual_clip), i.e. where the clip is active and the token gives no gradient; ``ratio_mean/max/min``
    (1.0 with no tokens); ``approx_kl``: mean of the k3 estimator ``(ratio - 1) - log(ratio)`` of
    KL(old || new); ``num_tokens``.
    """
    advantages = _token_advantages(logprobs, old_logprobs, advantages, mask)
    _check_clip_range(clip_low, clip_high)
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be greater than 1 (e.g. 3.0), got {dual_clip}; use null to turn it off")

    log_ratio = _log_ratio(logprobs, old_logprobs)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        loss_mat = torch.where(advantages < 0, torch.minimum(loss_mat, -advantages * dual_clip), loss_mat)
    loss = _finish(loss_mat, mask, is_weights, agg, norm_len, denominator)

    detached = ratio.detach()
    dual_clipped = (
        torch.zeros_like(mask, dtype=torch.bool) if dual_clip is None else (advantages < 0) & (detached > dual_clip)
    )
    return loss, _token_metrics(
        mask,
        log_ratio,
        {
            "clip_frac_low": (advantages < 0) & (detached < 1.0 - clip_low),
            "clip_frac_high": (advantages > 0) & (detached > 1.0 + clip_high),
            "dual_clip_frac": dual_clipped,
        },
    )


@POLICY_LOSSES.register("gspo")
@aggregates_with("seq-mean-token-mean")
def gspo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    agg: str = "seq-mean-token-mean",
    norm_len: float | None = None,
    denominator: float | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GSPO, Group Sequence Policy Optimization (Zheng et al. 2025, arXiv 2507.18071), its GSPO-token form.

    The ratio is the sequence's: the geometric mean of its tokens' ratios, applied to every token so that
    the gradient reaches each token's log-prob (``mean_t`` over the sequence's tokens in ``mask``)::

        s_i    = exp(mean_t(logprobs_i - old_logprobs_i))
        s_it   = sg(s_i) * exp(logprobs_it - sg(logprobs_it))          # value s_i, d s_it / d logprobs_it = s_i
        loss_t = max(-A_it * s_it, -A_it * clamp(s_it, 1 - clip_low, 1 + clip_high))

    aggregated per sequence (``seq-mean-token-mean``: the mean over sequences of each one's token mean,
    whatever ``algorithm.loss_agg`` says), which makes it the paper's sequence objective ``max(-A s_i, -A
    clip(s_i))`` with sequence-level advantages. Defaults: the paper's clip range ``3e-4`` / ``4e-4`` (a
    sequence ratio moves far less than a token's). A sequence without tokens has ``s = 1``.

    Metrics: ``clip_frac_low`` / ``clip_frac_high`` (shares of tokens whose sequence ratio is clipped: A < 0
    and s < 1 - clip_low, A > 0 and s > 1 + clip_high), ``seq_ratio_mean/max/min`` over sequences with
    tokens, and the per-token ratio statistics.
    """
    advantages = _token_advantages(logprobs, old_logprobs, advantages, mask)
    _check_clip_range(clip_low, clip_high)
    active = mask.bool()
    token_log_ratio = _log_ratio(logprobs, old_logprobs)
    tokens = active.sum(dim=-1, keepdim=True)
    mean_log_ratio = torch.where(active, token_log_ratio, 0.0).sum(dim=-1, keepdim=True) / tokens.clamp(min=1)
    sequence_ratio = mean_log_ratio.detach().exp()
    token_ratio = sequence_ratio * torch.exp(logprobs - logprobs.detach())
    unclipped = -advantages * token_ratio
    clipped = -advantages * token_ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = _finish(torch.maximum(unclipped, clipped), mask, is_weights, agg, norm_len, denominator)

    ratio = sequence_ratio.expand_as(advantages)
    metrics = _token_metrics(
        mask,
        token_log_ratio,
        {
            "clip_frac_low": (advantages < 0) & (ratio < 1.0 - clip_low),
            "clip_frac_high": (advantages > 0) & (ratio > 1.0 + clip_high),
        },
    )
    with torch.no_grad():
        seq_ratios = sequence_ratio[tokens > 0].float()
        if seq_ratios.numel():
            stats = torch.stack([seq_ratios.mean(), seq_ratios.max(), seq_ratios.min()]).tolist()
        else:
            stats = [1.0, 1.0, 1.0]
    return loss, {**metrics, **dict(zip(("seq_ratio_mean", "seq_ratio_max", "seq_ratio_min"), stats, strict=True))}


@POLICY_LOSSES.register("cispo")
@aggregates_with("token-mean")
def cispo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_high: float = 4.0,
    clip_low: float | None = None,
    agg: str = "token-mean",
    norm_len: float | None = None,
    denominator: float | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """CISPO, Clipped IS-weight Policy Optimization (MiniMax-M1, MiniMax 2025, arXiv 2506.13585).

    REINFORCE with a truncated importance weight that carries no gradient, so no token is dropped (PPO's
    clip zeroes the gradient of clipped tokens)::

        loss_t = -sg(min(ratio_t, 1 + clip_high)) * A_t * logprobs_t       # d loss_t / d logprobs_t = -min(ratio, 1 + clip_high) * A

    aggregated per token (``token-mean``, whatever ``algorithm.loss_agg`` says). The paper sets no lower
    bound (``clip_low`` None; a number bounds the weight below at ``1 - clip_low`` too) and tunes only the upper
    one without publishing it; the default ``clip_high = 4.0`` (a weight of at most 5) is ours. Metrics:
    ``is_truncated_frac`` (tokens whose weight is capped: ratio > 1 + clip_high, or below 1 - clip_low) and the
    ratio statistics.
    """
    advantages = _token_advantages(logprobs, old_logprobs, advantages, mask)
    if clip_high < 0 or (clip_low is not None and not 0.0 <= clip_low <= 1.0):
        raise ValueError(f"cispo needs clip_high >= 0 and clip_low in [0, 1] or None, got {clip_high}, {clip_low}")
    log_ratio = _log_ratio(logprobs, old_logprobs)
    ratio = log_ratio.detach().exp()
    weight = ratio.clamp(min=None if clip_low is None else 1.0 - clip_low, max=1.0 + clip_high)
    loss = _finish(-weight * advantages * logprobs, mask, is_weights, agg, norm_len, denominator)
    return loss, _token_metrics(mask, log_ratio, {"is_truncated_frac": weight != ratio})


@POLICY_LOSSES.register("dppo")
def dppo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    is_cap: float = 20.0,
    agg: str = "token-mean",
    norm_len: float | None = None,
    denominator: float | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """DPPO, Divergence PPO with the binary total-variation trust region (Qi et al. 2026, "Rethinking the
    Trust Region in LLM Reinforcement Learning", arXiv 2602.04879).

    The trust region bounds the change of the sampled token's probability, not its ratio (a ratio
    over-restricts rare tokens and under-restricts likely ones). With ``p = exp(logprobs)`` and ``p_old =
    exp(old_logprobs)``, a token is masked (loss 0, no gradient) when it moves further in its advantage's
    direction than allowed::

        masked = (A > 0 and p - p_old > clip_high) or (A < 0 and p - p_old < -clip_low)
        loss_t = 0 if masked else -sg(min(ratio_t, is_cap)) * A_t * logprobs_t

    then reduced with ``agg`` (masked tokens count in its denominator, as PPO's clipped tokens do). Defaults:
    ``is_cap = 20`` (the paper's truncated IS); ``clip_low = clip_high = 0.2`` is ours (a probability
    difference, not a ratio). Metrics: ``masked_frac_low`` / ``masked_frac_high`` (the two conditions above),
    ``is_truncated_frac`` (ratio > is_cap) and the ratio statistics.
    """
    advantages = _token_advantages(logprobs, old_logprobs, advantages, mask)
    if clip_low < 0 or clip_high < 0 or is_cap <= 0:
        raise ValueError(
            f"dppo needs clip_low >= 0, clip_high >= 0 and is_cap > 0, got {clip_low}, {clip_high}, {is_cap}"
        )
    log_ratio = _log_ratio(logprobs, old_logprobs)
    ratio = log_ratio.detach().exp()
    change = logprobs.detach().exp() - old_logprobs.detach().exp()
    masked_high = (advantages > 0) & (change > clip_high)
    masked_low = (advantages < 0) & (change < -clip_low)
    token_loss = -ratio.clamp(max=is_cap) * advantages * logprobs
    loss_mat = torch.where(masked_high | masked_low, torch.zeros_like(token_loss), token_loss)
    loss = _finish(loss_mat, mask, is_weights, agg, norm_len, denominator)
    return loss, _token_metrics(
        mask,
        log_ratio,
        {
            "masked_frac_low": masked_low,
            "masked_frac_high": masked_high,
            "is_truncated_frac": ratio > is_cap,
        },
    )
