"""The RL algorithms as small pure functions on tensors, registered by name.

Everything the trainer computes between "rewards came back" and "loss.backward()" lives here, side by
side so the variants can be compared line by line:

* advantage estimators (:data:`ADVANTAGE_ESTIMATORS`, :func:`compute_advantages`): ``grpo``, ``dr_grpo``,
  ``rloo``, ``reinforce_pp_baseline``;
* the PPO clipped surrogate with decoupled clip range, dual clip and truncated importance sampling
  (:func:`policy_loss`) and its aggregations (:data:`LOSS_AGGREGATIONS`, :func:`aggregate_loss`);
* KL estimators against a reference model (:data:`KL_ESTIMATORS`, :func:`kl_penalty`), entropy, and
  memory-light per-token log-probabilities (:func:`token_logprobs`, :func:`entropy_from_logits`);
* length regularization (:data:`LENGTH_SHAPERS`, :func:`shape_rewards`) and DAPO dynamic sampling.

Shapes: ``N`` samples in contiguous groups of ``group_size`` (sample ``i`` belongs to group
``i // group_size``); ``B`` sequences by ``T`` completion tokens with a 0/1 ``mask`` over real tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from rlvr.metrics import pass_at_k
from rlvr.registry import Registry
from rlvr.train_config import LengthConfig

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LENGTH_SHAPERS",
    "LOSS_AGGREGATIONS",
    "LengthBatch",
    "aggregate_loss",
    "compute_advantages",
    "dynamic_sampling_mask",
    "entropy_from_logits",
    "kimi_length_penalty",
    "kl_penalty",
    "overlong_filter_mask",
    "overlong_penalty",
    "pass_at_k",
    "policy_loss",
    "shape_rewards",
    "target_length_penalty",
    "token_logprobs",
    "truncated_is_weights",
]

STD_EPS = 1e-6
# exp() of a log-ratio beyond this overflows or carries no signal; such tokens are clipped anyway.
MAX_LOG_RATIO = 20.0
# Rows of logits turned into fp32 at a time by token_logprobs / entropy_from_logits.
DEFAULT_CHUNK_ROWS = 1024

AdvantageEstimator = Callable[[Tensor], Tensor]
# (loss [B, T] already zero where masked, mask [B, T], norm_len, denominator) -> scalar
LossAggregation = Callable[[Tensor, Tensor, float, float | None], Tensor]
KLEstimator = Callable[[Tensor], Tensor]

# (batch, options) -> (reward delta [N] or None, keep mask bool [N] or None); None means "this shaper is off".
LengthShaper = Callable[["LengthBatch", LengthConfig], tuple[Tensor | None, Tensor | None]]

ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")
LOSS_AGGREGATIONS: Registry[LossAggregation] = Registry("loss aggregation")
KL_ESTIMATORS: Registry[KLEstimator] = Registry("KL estimator")
LENGTH_SHAPERS: Registry[LengthShaper] = Registry("length shaper")


# --------------------------------------------------------------------------------------------------
# Advantages


def compute_advantages(rewards: Tensor, group_size: int, estimator: str = "grpo") -> Tensor:
    """Per-sample advantages ``[N]`` from rewards ``[N]`` in contiguous groups of ``group_size``.

    ``estimator`` is a name in :data:`ADVANTAGE_ESTIMATORS`. A group whose rewards are all equal carries no
    signal and gets exactly zero advantages (never NaN).
    """
    grouped = _by_group(rewards, group_size, "rewards").to(torch.float32)
    advantages = ADVANTAGE_ESTIMATORS.get(estimator)(grouped)
    flat_group = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)
    return advantages.masked_fill(flat_group, 0.0).reshape(-1)


def _by_group(values: Tensor, group_size: int, name: str) -> Tensor:
    """``values [N]`` viewed as ``[N / group_size, group_size]``; a clear error if that does not fit."""
    if values.dim() != 1 or group_size < 1 or values.numel() % group_size != 0:
        raise ValueError(
            f"{name} of shape {tuple(values.shape)} do not split into groups of {group_size}; "
            "pass a flat tensor with group_size samples for every prompt, groups contiguous"
        )
    return values.reshape(-1, group_size)


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


# --------------------------------------------------------------------------------------------------
# Policy loss


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


# --------------------------------------------------------------------------------------------------
# KL, entropy and log-probabilities


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


def _row_blocks(logits: Tensor, chunk_rows: int) -> Iterator[tuple[int, Tensor]]:
    """``(first_row, block [r, V])`` views covering ``logits [..., V]`` in row-major order, never copying.

    A slice such as ``logits[:, prompt_len - 1 : -1]`` cannot be flattened without a copy, so such inputs
    are split along their leading axis until each piece is a plain ``[rows, V]`` view.
    """
    pending = [logits]
    first_row = 0
    while pending:
        piece = pending.pop(0)
        try:
            rows = piece.view(-1, piece.shape[-1])
        except RuntimeError:
            pending[:0] = list(piece.unbind(0))
            continue
        for start in range(0, rows.shape[0], chunk_rows):
            yield first_row + start, rows[start : start + chunk_rows]
        first_row += rows.shape[0]


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """fp32 for half-precision logits, else their own dtype (fp64 stays fp64)."""
    return torch.promote_types(logits.dtype, torch.float32)


class _TokenLogprobs(torch.autograd.Function):
    """log_softmax(logits)[token] in row chunks; keeps only the per-row logsumexp for backward."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, token_ids: Tensor, chunk_rows: int) -> Tensor:
        ids = token_ids.reshape(-1, 1)
        chosen = torch.empty(ids.shape[0], dtype=_compute_dtype(logits), device=logits.device)
        logsumexp = torch.empty_like(chosen)
        for start, block in _row_blocks(logits, chunk_rows):
            stop = start + block.shape[0]
            block = block.to(chosen.dtype)
            chosen[start:stop] = torch.log_softmax(block, dim=-1).gather(-1, ids[start:stop]).squeeze(-1)
            # log p_token = z_token - logsumexp(z), so the row's logsumexp comes for free.
            logsumexp[start:stop] = block.gather(-1, ids[start:stop]).squeeze(-1) - chosen[start:stop]
        ctx.save_for_backward(logits, ids, logsumexp)
        ctx.chunk_rows = chunk_rows
        return chosen.view(token_ids.shape)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None]:
        logits, ids, logsumexp = ctx.saved_tensors
        grad_rows = grad_out.reshape(-1, 1).to(logsumexp.dtype)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        flat_grad = grad.view(-1, logits.shape[-1])
        in_place = grad.dtype == logsumexp.dtype
        for start, block in _row_blocks(logits, ctx.chunk_rows):
            stop = start + block.shape[0]
            # d log p_token / dz = onehot(token) - softmax(z), built in place to avoid temporaries.
            piece = flat_grad[start:stop] if in_place else torch.empty_like(block, dtype=logsumexp.dtype)
            torch.sub(block, logsumexp[start:stop, None], out=piece)
            piece.exp_().mul_(-grad_rows[start:stop])
            piece.scatter_add_(-1, ids[start:stop], grad_rows[start:stop])
            if not in_place:
                flat_grad[start:stop] = piece
        return grad, None, None


def token_logprobs(logits: Tensor, token_ids: Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """Log-probability of each chosen token: ``log_softmax(logits)[..., token_ids]``, ``[...]``, at least fp32.

    ``logits`` is ``[..., V]`` in any dtype and ``token_ids`` ``[...]``. Only ``chunk_rows`` rows are
    converted to fp32 at a time, and backward keeps just one logsumexp per row (recomputing the softmax
    from the logits chunk by chunk), so neither pass materialises a full fp32 ``[B, T, V]`` tensor.
    """
    if logits.shape[:-1] != token_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be token_ids {tuple(token_ids.shape)} plus a vocab axis")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    return _TokenLogprobs.apply(logits, token_ids.long(), chunk_rows)


def _p_log_p(log_probs: Tensor) -> Tensor:
    """``p * log p`` with the limit 0 where ``p = 0`` (logits of -inf), instead of ``0 * -inf = NaN``."""
    return torch.where(log_probs.isneginf(), 0.0, log_probs.exp() * log_probs)


class _Entropy(torch.autograd.Function):
    """Softmax entropy per row in row chunks; keeps the per-row logsumexp and entropy for backward."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, chunk_rows: int) -> Tensor:
        num_rows = logits.numel() // logits.shape[-1]
        logsumexp = torch.empty(num_rows, dtype=_compute_dtype(logits), device=logits.device)
        entropy = torch.empty_like(logsumexp)
        for start, block in _row_blocks(logits, chunk_rows):
            stop = start + block.shape[0]
            block = block.to(logsumexp.dtype)
            block_lse = torch.logsumexp(block, dim=-1)
            log_probs = block - block_lse[:, None]
            entropy[start:stop] = -_p_log_p(log_probs).sum(-1)
            logsumexp[start:stop] = block_lse
        ctx.save_for_backward(logits, logsumexp, entropy)
        ctx.chunk_rows = chunk_rows
        return entropy.view(logits.shape[:-1])

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None]:
        logits, logsumexp, entropy = ctx.saved_tensors
        grad_rows = grad_out.reshape(-1, 1).to(logsumexp.dtype)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        flat_grad = grad.view(-1, logits.shape[-1])
        for start, block in _row_blocks(logits, ctx.chunk_rows):
            stop = start + block.shape[0]
            log_probs = block.to(logsumexp.dtype) - logsumexp[start:stop, None]
            # dH/dz_j = -p_j * (log p_j + H)
            p_log_p = _p_log_p(log_probs) + log_probs.exp() * entropy[start:stop, None]
            flat_grad[start:stop] = -p_log_p * grad_rows[start:stop]
        return grad, None


def entropy_from_logits(logits: Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """Entropy of ``softmax(logits)`` over the last axis, ``[...]``, at least fp32; stable via logsumexp.

    Memory-light like :func:`token_logprobs`: fp32 copies exist one ``chunk_rows`` chunk at a time.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    return _Entropy.apply(logits, chunk_rows)


# --------------------------------------------------------------------------------------------------
# Length regularization


def overlong_penalty(lengths: Tensor, max_len: int, buffer_len: int, factor: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment ``[N]``: 0 up to ``max_len - buffer_len``, then linear to ``-factor``
    at ``max_len``, and ``-factor`` beyond: ``-factor * clamp((len - (max_len - buffer_len)) / buffer_len, 0, 1)``.
    """
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"overlong buffer_len must be in 1..max_len={max_len}, got {buffer_len}")
    excess = (lengths.to(torch.float32) - (max_len - buffer_len)) / buffer_len
    return -factor * excess.clamp(0.0, 1.0)


def overlong_filter_mask(truncated: Tensor) -> Tensor:
    """DAPO overlong filtering: ``bool[N]`` sample mask, False for truncated samples (kept out of the loss)."""
    return ~truncated.bool()


def kimi_length_penalty(correct: Tensor, lengths: Tensor, group_size: int) -> Tensor:
    """Kimi k1.5 length reward ``[N]`` (to be scaled by a coefficient), per group of ``group_size``.

    With ``lambda = 0.5 - (len - min_len) / (max_len - min_len)`` over the group's lengths in tokens,
    correct samples get ``lambda`` and wrong ones ``min(0, lambda)``; a group of equal lengths gets 0.
    """
    if correct.shape != lengths.shape:
        raise ValueError(f"correct {tuple(correct.shape)} and lengths {tuple(lengths.shape)} must have the same shape")
    grouped = _by_group(lengths, group_size, "lengths").to(torch.float32)
    shortest = grouped.amin(dim=1, keepdim=True)
    spread = grouped.amax(dim=1, keepdim=True) - shortest
    lam = torch.where(spread > 0, 0.5 - (grouped - shortest) / spread.masked_fill(spread == 0, 1.0), 0.0)
    lam = lam.reshape(-1)
    return torch.where(correct.bool(), lam, lam.clamp(max=0.0))


def target_length_penalty(lengths: Tensor, target_length: int | Tensor, coef: float) -> Tensor:
    """L1-exact target-length penalty ``[N]``: ``-coef * |target_length - len|`` (target per sample or shared)."""
    target = torch.as_tensor(target_length, dtype=torch.float32, device=lengths.device)
    return -coef * (target - lengths.to(torch.float32)).abs()


@dataclass(frozen=True)
class LengthBatch:
    """What a length shaper sees: per-sample ``[N]`` tensors of one batch, groups contiguous."""

    rewards: Tensor
    lengths: Tensor
    truncated: Tensor
    correct: Tensor
    group_size: int
    max_len: int


@LENGTH_SHAPERS.register("overlong_penalty")
def _shape_overlong_penalty(batch: LengthBatch, options: LengthConfig) -> tuple[Tensor | None, Tensor | None]:
    """DAPO soft overlong punishment, on when ``overlong_buffer > 0``."""
    if options.overlong_buffer <= 0:
        return None, None
    return overlong_penalty(batch.lengths, batch.max_len, options.overlong_buffer, options.overlong_factor), None


@LENGTH_SHAPERS.register("overlong_filter")
def _shape_overlong_filter(batch: LengthBatch, options: LengthConfig) -> tuple[Tensor | None, Tensor | None]:
    """DAPO overlong filtering, on when ``overlong_filter`` is true."""
    return None, (overlong_filter_mask(batch.truncated) if options.overlong_filter else None)


@LENGTH_SHAPERS.register("kimi")
def _shape_kimi(batch: LengthBatch, options: LengthConfig) -> tuple[Tensor | None, Tensor | None]:
    """Kimi k1.5 group length penalty times ``kimi_coef``, on when ``kimi_coef != 0``."""
    if options.kimi_coef == 0.0:
        return None, None
    return options.kimi_coef * kimi_length_penalty(batch.correct, batch.lengths, batch.group_size), None


@LENGTH_SHAPERS.register("target_length")
def _shape_target_length(batch: LengthBatch, options: LengthConfig) -> tuple[Tensor | None, Tensor | None]:
    """Target-length penalty, on when ``target_length`` is set and ``target_coef != 0``."""
    if options.target_length is None or options.target_coef == 0.0:
        return None, None
    return target_length_penalty(batch.lengths, options.target_length, options.target_coef), None


_LENGTH_OPTION_NAMES = {field.name for field in fields(LengthConfig)}


def shape_rewards(
    rewards: Tensor,
    lengths: Tensor,
    truncated: Tensor,
    group_size: int,
    *,
    max_len: int,
    correct: Tensor | None = None,
    **options: Any,
) -> tuple[Tensor, Tensor]:
    """Apply every configured length regularizer: ``(shaped_rewards [N], sample_mask bool [N])``.

    ``options`` are the fields of :class:`rlvr.train_config.LengthConfig` (``overlong_buffer``,
    ``overlong_factor``, ``overlong_filter``, ``kimi_coef``, ``target_length``, ``target_coef``), so the
    trainer passes ``**dataclasses.asdict(config.algorithm.length)``; omitted ones take their defaults
    (off). ``max_len`` is the generation limit (``rollout.max_new_tokens``). ``correct`` (default:
    ``rewards > 0``) is what the Kimi penalty calls a correct answer. Every shaper in
    :data:`LENGTH_SHAPERS` sees the unshaped batch; their reward deltas add up and their masks combine
    with AND. The mask marks samples that stay in the loss.
    """
    unknown = sorted(set(options) - _LENGTH_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown length option(s) {unknown}; valid: {sorted(_LENGTH_OPTION_NAMES)}")
    config = LengthConfig(**options)
    rewards = rewards.to(torch.float32)
    batch = LengthBatch(
        rewards=rewards,
        lengths=lengths,
        truncated=truncated.bool(),
        correct=(rewards > 0) if correct is None else correct.bool(),
        group_size=group_size,
        max_len=max_len,
    )
    shaped = rewards.clone()
    keep = torch.ones_like(batch.truncated)
    for name in LENGTH_SHAPERS.available():
        delta, mask = LENGTH_SHAPERS.get(name)(batch, config)
        if delta is not None:
            shaped = shaped + delta
        if mask is not None:
            keep = keep & mask
    return shaped, keep
