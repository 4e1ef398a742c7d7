"""Helpers shared by several algorithm families (not a plug-in module: the leading underscore keeps the
registries' package scan away from it)."""

from __future__ import annotations

from torch import Tensor

# exp() of a log-ratio beyond this overflows or carries no signal; such tokens are clipped anyway.
MAX_LOG_RATIO = 20.0


def _by_group(values: Tensor, group_size: int, name: str) -> Tensor:
    """``values [N]`` viewed as ``[N / group_size, group_size]``; a clear error if that does not fit."""
    if values.dim() != 1 or group_size < 1 or values.numel() % group_size != 0:
        raise ValueError(
            f"{name} of shape {tuple(values.shape)} do not split into groups of {group_size}; "
            "pass a flat tensor with group_size samples for every prompt, groups contiguous"
        )
    return values.reshape(-1, group_size)
