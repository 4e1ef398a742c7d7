"""Cost of each registered policy loss, forward and backward on log-prob tensors, as a ratio to ``ppo``.

``python -m benchmarks.policy_losses [--batch 64] [--tokens 2048] [--repeats 30]``: random log-probs of a
batch of ``B x T`` tokens (a quarter of each row padded), one advantage per sequence, slightly off-policy old
log-probs; every loss runs ``compute_policy_loss`` and ``backward`` in turn, round-robin, so machine load hits
all of them alike. Prints the median milliseconds per call and the ratio to ``ppo`` as JSON. The model's
forward and backward dominate a training step by orders of magnitude; this shows no loss adds more than noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from rlvr.algorithms import POLICY_LOSSES, compute_policy_loss


def inputs(batch: int, tokens: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(batch, tokens, generator=generator) * 5.0
    old = logprobs + 0.05 * torch.randn(batch, tokens, generator=generator)
    advantages = torch.randn(batch, generator=generator)
    lengths = torch.randint(tokens * 3 // 4, tokens + 1, (batch,), generator=generator)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).float()
    return logprobs, old, advantages, mask


def seconds_per_call(name: str, logprobs: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor,
                     mask: torch.Tensor) -> float:
    leaf = logprobs.clone().requires_grad_(True)
    start = time.perf_counter()
    loss, _ = compute_policy_loss(name, leaf, old, advantages, mask, agg="token-mean")
    loss.backward()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    tensors = inputs(args.batch, args.tokens)
    names = POLICY_LOSSES.available()
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up
        seconds_per_call(name, *tensors)
    for _ in range(args.repeats):
        for name in names:
            times[name].append(seconds_per_call(name, *tensors))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "shape": [args.batch, args.tokens], "repeats": args.repeats, "threads": torch.get_num_threads(),
        "median_ms": {name: round(1000 * value, 3) for name, value in median.items()},
        "ratio_to_ppo": {name: round(value / median["ppo"], 2) for name, value in median.items()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
