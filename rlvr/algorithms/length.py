"""Length regularization (:data:`LENGTH_SHAPERS`, :func:`shape_rewards`): DAPO overlong punishment and
filtering, the Kimi k1.5 length penalty, a target-length penalty."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from rlvr.algorithms._shared import _by_group
from rlvr.registry import Registry
from rlvr.train_config import LengthConfig

# (batch, options) -> (reward delta [N] or None, keep mask bool [N] or None); None means "this shaper is off".
LengthShaper = Callable[["LengthBatch", LengthConfig], tuple[Tensor | None, Tensor | None]]

LENGTH_SHAPERS: Registry[LengthShaper] = Registry(
    "length shaper", package="rlvr.algorithms", entry_point_group="rlvr.length_shapers"
)


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
