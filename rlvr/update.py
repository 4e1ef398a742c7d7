"""The policy update: PPO epochs over a batch of scored samples, in mini-batches (one optimizer
step each) of length-bucketed micro-batches (one forward/backward each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlvr import faults
from rlvr.algorithms import (
    aggregate_loss,
    compute_policy_loss,
    kl_penalty,
    policy_loss_aggregation,
    truncated_is_weights,
)
from rlvr.distributed import SINGLE, ShardedPolicy, World, clip_grad_norm, combine_metrics, reduce, token_stats
from rlvr.policy import TokenStats, can_share_prompts, completion_logprobs, shared_prompt_logprobs
from rlvr.train_config import AlgorithmConfig, TrainConfig


@dataclass
class TrainBatch:
    """Everything the loss needs, per sample (N samples).

    In a data-parallel run a rank holds only its samples of the whole batch: ``positions`` are their places
    in the whole batch of ``global_size`` samples (None: this is the whole batch, in order)."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: torch.Tensor  # [N]
    sample_mask: torch.Tensor  # [N] 0 for samples kept out of the loss (overlong filtering)
    sampler_logprobs: list[list[float]]
    old_logprobs: list[torch.Tensor] | None = None  # per sample [T_i], when the update is off-policy
    ref_logprobs: list[torch.Tensor] | None = None  # per sample [T_i], when a KL penalty is on
    loss_masks: list[list[int]] | None = None  # per sample [T_i]: 1 a model token, 0 a tool's output (None: all 1)
    token_advantages: list[torch.Tensor] | None = None  # per sample [T_i], replacing advantages (GAE, rlvr.critic)
    returns: list[torch.Tensor] | None = None  # per sample [T_i]: the value model's targets (GAE)
    old_values: list[torch.Tensor] | None = None  # per sample [T_i]: the values the advantages were computed with
    positions: list[int] | None = None
    global_size: int | None = None

    def __len__(self) -> int:
        return len(self.completion_ids)

    def model_tokens(self, index: int) -> int:
        """Tokens of sample ``index`` that are the model's (in the loss)."""
        return len(self.completion_ids[index]) if self.loss_masks is None else sum(self.loss_masks[index])

    def local_index(self) -> dict[int, int]:
        """Whole-batch position -> index into this batch, for the samples this rank holds."""
        return {position: index for index, position in enumerate(self.positions or range(len(self)))}


@dataclass
class Packed:
    """Right-padded tensors of a micro-batch (see :func:`rlvr.policy.completion_logprobs`)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_lengths: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor


def padded(rows: list[list[int]] | list[tuple[int, ...]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` as one [len(rows), longest] token tensor, padded on the right (or left), and its 0/1 mask."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        span = slice(width - len(tokens), width) if left else slice(0, len(tokens))
        ids[row, span] = torch.tensor(tokens, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, device: torch.device) -> Packed:
    input_ids, attention_mask = padded([p + c for p, c in zip(prompt_ids, completion_ids, strict=True)], pad_id)
    completions, completion_mask = padded(completion_ids, pad_id)
    prompt_lengths = torch.tensor([len(p) for p in prompt_ids])
    tensors = (input_ids, attention_mask, prompt_lengths, completions, completion_mask.float())
    return Packed(*(t.to(device) for t in tensors))


@dataclass
class SharedPacked:
    """A micro-batch with each distinct prompt once (see :func:`rlvr.policy.shared_prompt_logprobs`)."""

    prompt_ids: torch.Tensor  # [U, P] left-padded
    prompt_mask: torch.Tensor
    prompt_index: torch.Tensor  # [B]: the prompt row each completion continues
    completion_ids: torch.Tensor  # [B, T] right-padded
    completion_mask: torch.Tensor


def pack_shared(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, device: torch.device) -> SharedPacked:
    distinct: dict[tuple[int, ...], int] = {}
    index = [distinct.setdefault(tuple(prompt), len(distinct)) for prompt in prompt_ids]
    prompts, prompt_mask = padded(list(distinct), pad_id, left=True)
    completions, completion_mask = padded(completion_ids, pad_id)
    tensors = (prompts, prompt_mask, torch.tensor(index), completions, completion_mask.float())
    return SharedPacked(*(t.to(device) for t in tensors))


def micro_batch_stats(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                      temperature: float, entropy_grad: bool = False) -> tuple[TokenStats, torch.Tensor]:
    """Token log-probs and entropies of one micro-batch, and its completion mask ([B, T] each).

    Rows that share a prompt (a GRPO group) run the prompt once (:func:`rlvr.policy.shared_prompt_logprobs`)
    unless gradient checkpointing rules that out; otherwise every row is one padded sequence."""
    device = next(model.parameters()).device
    if _shares_prompts(model) and len(set(map(tuple, prompt_ids))) < len(prompt_ids):
        shared = pack_shared(prompt_ids, completion_ids, pad_id, device)
        stats = token_stats(model, shared_prompt_logprobs, shared.prompt_ids, shared.prompt_mask, shared.prompt_index,
                            shared.completion_ids, shared.completion_mask, temperature, entropy_grad)
        return stats, shared.completion_mask
    packed = pack(prompt_ids, completion_ids, pad_id, device)
    stats = token_stats(model, completion_logprobs, packed.input_ids, packed.attention_mask, packed.prompt_lengths,
                        packed.completion_ids, packed.completion_mask, temperature, entropy_grad)
    return stats, packed.completion_mask


def pad_rows(rows: list[torch.Tensor] | list[list[float]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        values = torch.as_tensor(row, dtype=torch.float32)
        out[i, : len(values)] = values
    return out.to(device)


def length_buckets(lengths: list[int], size: int) -> list[list[int]]:
    """Split indices into micro-batches of ``size`` with similar lengths, to cut padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + size] for i in range(0, len(order), size)]


def micro_batches(prompt_ids: list[list[int]], completion_ids: list[list[int]], size: int, share_prompts: bool) -> list[list[int]]:
    """Split indices into micro-batches of ``size``: by length (least padding), or, when prompts can be shared,
    prompt by prompt (each prompt run once per micro-batch), whichever costs fewer token positions."""
    by_length = length_buckets([len(p) + len(c) for p, c in zip(prompt_ids, completion_ids, strict=True)], size)
    if not share_prompts:
        return by_length
    first_seen: dict[tuple[int, ...], int] = {}
    keys = [first_seen.setdefault(tuple(prompt), len(first_seen)) for prompt in prompt_ids]
    order = sorted(range(len(prompt_ids)), key=lambda i: (keys[i], len(completion_ids[i])))
    by_prompt = [order[i : i + size] for i in range(0, len(order), size)]

    def cost(buckets: list[list[int]]) -> int:
        """Token positions the model runs: each distinct prompt once (padded), plus the padded completions."""
        total = 0
        for bucket in buckets:
            prompts = {tuple(prompt_ids[i]) for i in bucket}
            total += len(prompts) * max(map(len, prompts)) + len(bucket) * max(len(completion_ids[i]) for i in bucket)
        return total

    return by_prompt if cost(by_prompt) < cost(by_length) else by_length


def loss_denominator(agg: str, completion_lengths: list[int]) -> float:
    """What a loss aggregation divides by over a whole mini-batch: its tokens for ``token-mean``,
    its non-empty sequences for the sequence-mean aggregations. Passing it to every micro-batch
    makes the accumulated gradient that of the mini-batch loss."""
    if agg == "token-mean":
        return float(sum(completion_lengths))
    return float(sum(1 for length in completion_lengths if length > 0))


@torch.no_grad()
def per_sample_logprobs(model, batch: TrainBatch, indices: list[int], config: TrainConfig, pad_id: int,
                        world: World = SINGLE) -> list[torch.Tensor]:
    """Trainer log-probs of the given samples (no gradient), one [T_i] tensor each, CPU."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(batch)
    for micro in _in_lockstep(_micro_batches(model, batch, indices, config.optim.micro_batch_size), world):
        if not micro:
            _idle_pass(model, pad_id, backward=False)
            continue
        chosen = [indices[i] for i in micro]
        stats, _ = micro_batch_stats(model, [batch.prompt_ids[i] for i in chosen], [batch.completion_ids[i] for i in chosen],
                                     pad_id, config.rollout.temperature)
        for row, index in enumerate(chosen):
            out[index] = stats.logprobs[row, : len(batch.completion_ids[index])].cpu()
    return [out[i] for i in indices]


def update_policy(model, optimizer, scheduler, batch: TrainBatch, config: TrainConfig, pad_id: int, generator: torch.Generator,
                  world: World = SINGLE) -> dict[str, float]:
    """Run ``ppo_epochs`` passes of clipped policy-gradient updates over ``batch``; return metrics.

    Data-parallel, every rank draws the same permutation of the WHOLE batch, so a mini-batch is the same set
    of samples as on one process; each rank runs its samples of it, each micro-batch's loss divided by the
    whole mini-batch's denominator (tokens or sequences over all ranks), and the gradients are summed over
    ranks: the update is the one-process update. Every rank runs as many forward/backward passes as the rank
    with the most micro-batches (FSDP's collectives need all ranks), idle ones on a zero-weight token."""
    optim = config.optim
    device = next(model.parameters()).device
    total = batch.global_size or len(batch)
    local = batch.local_index()
    num_mini_batches = optim.ppo_epochs * -(-total // optim.mini_batch_size)
    totals: dict[str, float] = {}  # this rank's shares of whole-batch metrics
    grad_norms: dict[str, float] = {}  # the same on every rank
    applied: list[tuple[dict[str, float], float]] = []  # this rank's metrics and the grad norm of each update taken
    model.train()
    for _ in range(optim.ppo_epochs):
        order = torch.randperm(total, generator=generator).tolist()
        for start in range(0, total, optim.mini_batch_size):
            # Samples masked out of the loss (overlong filtering) add nothing: skip their forward.
            mini = [local[p] for p in order[start : start + optim.mini_batch_size] if p in local and batch.sample_mask[local[p]] > 0]
            in_loss = [batch.model_tokens(i) for i in mini]
            denominator, tokens = reduce(world, [loss_denominator(loss_aggregation(config.algorithm), in_loss), sum(in_loss)])
            optimizer.zero_grad(set_to_none=True)
            metrics: dict[str, float] = {}
            for micro in _in_lockstep(_micro_batches(model, batch, mini, optim.micro_batch_size), world):
                if not micro:
                    _idle_pass(model, pad_id, backward=True)
                    continue
                micro_metrics = _micro_step(model, batch, [mini[i] for i in micro], config, pad_id, device, denominator)
                token_share = micro_metrics.pop("num_tokens") / max(tokens, 1)
                _merge(metrics, micro_metrics, token_share, summed=_MICRO_CONTRIBUTIONS)
            grad_norm = clip_grad_norm(model, optim.max_grad_norm)
            if not faults.finite_update(metrics.get("loss"), grad_norm, world):
                optimizer.zero_grad(set_to_none=True)  # a NaN or inf: skip this update, on every rank alike
                continue
            optimizer.step()
            scheduler.step()
            applied.append((metrics, grad_norm))
    for metrics, grad_norm in applied:
        _merge(totals, metrics, 1.0 / len(applied))
        _merge(grad_norms, {"grad_norm": grad_norm}, 1.0 / len(applied))
    totals = combine_metrics(world, totals)
    totals.update(grad_norms)
    totals["lr"] = scheduler.get_last_lr()[0]
    totals["optimizer_steps"] = float(len(applied))
    totals["update/nonfinite_skipped"] = float(num_mini_batches - len(applied))
    return totals


def _in_lockstep(micro: list[list[int]], world: World) -> list[list[int]]:
    """``micro`` padded with empty micro-batches to the most any rank has."""
    most = int(reduce(world, [len(micro)], "max")[0])
    return micro + [[] for _ in range(most - len(micro))]


def _idle_pass(model, pad_id: int, backward: bool) -> None:
    """A forward (and backward) of one token with zero weight: takes part in FSDP's collectives, changes nothing."""
    stats, _ = micro_batch_stats(model, [[pad_id]], [[pad_id]], pad_id, 1.0)
    if backward:
        (stats.logprobs.sum() * 0.0).backward()


def _micro_batches(model, batch: TrainBatch, indices: list[int], size: int) -> list[list[int]]:
    """:func:`micro_batches` of the samples ``indices`` (positions into ``indices``)."""
    return micro_batches([batch.prompt_ids[i] for i in indices], [batch.completion_ids[i] for i in indices], size,
                         _shares_prompts(model))


def _shares_prompts(model) -> bool:
    """Whether micro-batches run each distinct prompt once (:func:`rlvr.policy.shared_prompt_logprobs`). Not
    under FSDP: that forward runs every decoder layer twice (prompt, then completions), gathering its shards
    twice, and all ranks must run the same collectives, also a rank whose pass is an idle one."""
    return can_share_prompts(model) and not isinstance(model, ShardedPolicy)


# Micro-batch values that are each micro-batch's share of the mini-batch value (they add up).
_MICRO_CONTRIBUTIONS = frozenset({"loss", "entropy", "kl_ref"})


def _merge(into: dict[str, float], metrics: dict[str, float], weight: float, summed: frozenset[str] = frozenset()) -> None:
    """Fold ``metrics`` into ``into``: maxima and minima as such, ``summed`` keys added, others
    averaged with ``weight``."""
    for key, value in metrics.items():
        if key.endswith("_max"):
            into[key] = max(into.get(key, value), value)
        elif key.endswith("_min"):
            into[key] = min(into.get(key, value), value)
        else:
            into[key] = into.get(key, 0.0) + value * (1.0 if key in summed else weight)


def loss_aggregation(algo: AlgorithmConfig) -> str:
    """The aggregation of the policy loss, and so of the entropy and KL terms and the micro-batch denominators:
    ``algorithm.loss_agg`` unless the policy loss fixes its own (gspo: per sequence)."""
    return policy_loss_aggregation(algo.policy_loss, algo.loss_agg)


def _chosen_loss_options(algo: AlgorithmConfig) -> dict[str, Any]:
    """The chosen policy loss's options: ppo's are ``algorithm.clip_low/clip_high/dual_clip``, every other loss's
    ``algorithm.policy_loss_options[name]`` over its defaults."""
    if algo.policy_loss == "ppo":
        return {"clip_low": algo.clip_low, "clip_high": algo.clip_high, "dual_clip": algo.dual_clip}
    return dict(algo.policy_loss_options.get(algo.policy_loss, {}))


def _micro_step(model, batch: TrainBatch, chosen: list[int], config: TrainConfig, pad_id: int, device, denominator: float) -> dict[str, float]:
    """Forward and backward of one micro-batch; its loss is scaled by the mini-batch ``denominator``."""
    algo = config.algorithm
    stats, mask = micro_batch_stats(model, [batch.prompt_ids[i] for i in chosen], [batch.completion_ids[i] for i in chosen],
                                    pad_id, config.rollout.temperature, entropy_grad=algo.entropy_coef != 0)
    width = mask.shape[1]
    if batch.loss_masks is not None:  # tool outputs in the response: not the model's tokens, out of the loss
        mask = mask * pad_rows([batch.loss_masks[i] for i in chosen], width, device)
    if batch.old_logprobs is not None:
        old = pad_rows([batch.old_logprobs[i] for i in chosen], width, device)
    else:  # one optimizer step per batch: the data is exactly on-policy
        old = stats.logprobs.detach()
    # How far the sampler's log-probs are from the trainer's: near 0 unless weights failed to sync
    # or the engines' numerics differ (bf16 kernels); truncated IS corrects for the difference.
    sampler = pad_rows([batch.sampler_logprobs[i] for i in chosen], width, device)
    sampler_gap = ((old - sampler).abs() * mask).sum() / mask.sum().clamp(min=1)
    is_weights = truncated_is_weights(old, sampler, algo.tis_cap) if algo.tis_cap is not None else None
    reduce = {"agg": loss_aggregation(algo), "norm_len": config.rollout.max_new_tokens, "denominator": denominator}
    if batch.token_advantages is not None:
        advantages = pad_rows([batch.token_advantages[i] for i in chosen], width, device)
    else:
        advantages = batch.advantages[chosen].to(device)
    loss, metrics = compute_policy_loss(
        algo.policy_loss, stats.logprobs, old, advantages, mask, is_weights=is_weights, **reduce, **_chosen_loss_options(algo)
    )
    entropy = aggregate_loss(stats.entropy, mask, **reduce)
    if algo.entropy_coef:
        loss = loss - algo.entropy_coef * entropy
    if batch.ref_logprobs is not None:
        ref = pad_rows([batch.ref_logprobs[i] for i in chosen], width, device)
        kl = aggregate_loss(kl_penalty(stats.logprobs, ref, algo.kl_estimator), mask, **reduce)
        loss = loss + algo.kl_coef * kl
        metrics["kl_ref"] = kl.item()
    loss.backward()  # even when not finite: every rank takes part, and update_policy skips the step
    metrics.update({"loss": loss.item(), "entropy": entropy.item(), "sampler_logprob_gap": sampler_gap.item()})
    return metrics
