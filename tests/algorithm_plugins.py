"""Algorithm plug-ins from outside rlvr: one per algorithm registry, advertised under its entry-point group by a
``*.dist-info`` directory (as an installed package would be), for tests/test_algorithm_plugins.py. None of them
registers itself: only the entry points make them known."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

ENTRY_POINTS = {
    "rlvr.advantage_estimators": {"sign": "algorithm_plugins:sign_advantages"},
    "rlvr.policy_losses": {"reinforce": "algorithm_plugins:reinforce_loss"},
    "rlvr.loss_aggregations": {"token-sum": "algorithm_plugins:token_sum"},
    "rlvr.kl_estimators": {"abs": "algorithm_plugins:kl_abs"},
    "rlvr.length_shapers": {"half-point-bonus": "algorithm_plugins:half_point_bonus"},
}


def advertise(site: Path, groups: dict[str, dict[str, str]], distribution: str = "rlvr_test_algorithms") -> None:
    """Write ``site/<distribution>-0.0.dist-info`` advertising ``groups`` ({group: {name: "module:attribute"}})."""
    info = site / f"{distribution}-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in names.items()) + "\n"
                for group, names in groups.items())
    )


def sign_advantages(grouped: Tensor) -> Tensor:
    """+1 above the group mean, -1 below."""
    return torch.sign(grouped - grouped.mean(dim=1, keepdim=True))


def reinforce_loss(logprobs, old_logprobs, advantages, mask, *, agg, norm_len=None, denominator=None,
                   is_weights=None, scale: float = 1.0):
    """``-scale * A * logprobs`` summed over the tokens (``agg`` is ignored: this loss fixes nothing, it is a test)."""
    loss = -(scale * advantages[:, None] * logprobs * mask).sum()
    return loss, {"num_tokens": float(mask.sum())}


def token_sum(loss_mat: Tensor, mask: Tensor, norm_len: float, denominator: float | None) -> Tensor:
    return loss_mat.sum()


def kl_abs(log_ratio: Tensor) -> Tensor:
    return log_ratio.abs()


def half_point_bonus(batch, options):
    """Half a point more for every sample, always on."""
    return torch.full_like(batch.rewards, 0.5), None
