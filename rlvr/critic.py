"""The value model of PPO (``algorithm.estimator: gae``): per-token values, GAE advantages, its own updates.

A separate model rather than a value head on the policy, as verl and OpenRLHF do: the policy stays a plain
causal LM (its checkpoints load in vLLM and ``from_pretrained`` as they are), the value loss never pulls on the
policy's features, and the two get their own learning rates. It costs a second backbone in memory and one more
forward per sample; for a head on the policy that would be shared. The value model is the policy's starting
checkpoint without its LM head, plus a scalar head initialised to zero (every value starts at 0, so the first
advantages are the plain discounted rewards).

Data-parallel, the value model is sharded with FSDP2 like the policy (``rlvr.distributed.shard_policy``), and its
checkpoint (``value/``) is written and read like the policy's: full weights from rank 0, the optimizer sharded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlvr.algorithms import (
    gae_advantages,
    is_token_level,
    last_token_rewards,
    length_adaptive_lambda,
    value_loss,
    whiten,
)
from rlvr.checkpoint import OPTIMIZER_DIR, VALUE_DIR, load_optimizer, save_optimizer
from rlvr.distributed import SINGLE, World, all_gather, clip_grad_norm, combine_metrics, reduce, shard_policy
from rlvr.train_config import TrainConfig
from rlvr.update import TrainBatch, _in_lockstep, length_buckets, loss_denominator, pack, pad_rows

WEIGHTS_FILE = "value_model.safetensors"
STATE_FILE = "value_state.pt"


class ValueModel(nn.Module):
    """A causal LM's backbone with a scalar head: the value of the state before each completion token."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1, dtype=next(backbone.parameters()).dtype)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype) -> ValueModel:
        from transformers import AutoModel

        model = cls(AutoModel.from_pretrained(path, dtype=dtype))
        return model.to("cuda" if torch.cuda.is_available() else "cpu")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lengths: torch.Tensor,
                completion_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` values of right-padded ``prompt + completion`` rows (see :func:`rlvr.policy.completion_logprobs`
        for the layout): position ``prompt_length + t - 1`` is the state that predicts completion token ``t``."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(completion_ids.shape[1], device=hidden.device)
        source = (prompt_lengths.to(hidden.device)[:, None] + positions[None, :] - 1).clamp(max=hidden.shape[1] - 1)
        states = hidden.gather(1, source[..., None].expand(-1, -1, hidden.shape[-1]))
        return self.head(states).squeeze(-1).float()


class Critic:
    """The value model with its optimizer and schedule: GAE advantages for a batch, then value updates.

    Data-parallel, the value model is sharded like the policy and each rank holds its samples of the batch
    (``batch.positions``): values and GAE are per sample, the whitening statistics and the loss denominators
    cover the whole batch, mini-batches are the same sets of samples as on one process, and every rank runs
    as many forward passes as the busiest one (idle ones on a zero-weight token), as :mod:`rlvr.update` does."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig, pad_id: int,
                 world: World = SINGLE):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.cfg, self.options, self.pad_id, self.world = cfg, cfg.algorithm.gae, pad_id, world

    def warming_up(self, step: int) -> bool:
        """Whether ``step`` is one of the first ``value_warmup_steps``, in which only the value model learns."""
        return step <= self.options.value_warmup_steps

    @torch.no_grad()
    def values(self, batch: TrainBatch, indices: list[int]) -> list[torch.Tensor]:
        """The values of the given samples' completion tokens, one ``[T_i]`` CPU tensor each."""
        self.model.eval()
        out: dict[int, torch.Tensor] = {}
        for micro in _in_lockstep(self._micro_batches(batch, indices), self.world):
            if not micro:
                self._idle_pass(backward=False)
                continue
            values, _ = self._forward(batch, micro)
            for row, index in enumerate(micro):
                out[index] = values[row, : len(batch.completion_ids[index])].cpu()
        return [out[i] for i in indices]

    def advantages(self, batch: TrainBatch, rewards: torch.Tensor) -> dict[str, float]:
        """Fill ``batch.token_advantages``, ``returns`` and ``old_values`` from the samples' (shaped) ``rewards``
        ``[N]``: values now, the reward on each sample's last model token, GAE with the policy's lambda (VAPO:
        length-adaptive) for the advantages (whitened over the whole batch's model tokens) and with
        ``critic_lam`` for the value targets."""
        everyone = list(range(len(batch)))
        old_values = self.values(batch, everyone)
        width = max(len(ids) for ids in batch.completion_ids)
        values = pad_rows(old_values, width, torch.device("cpu"))
        mask = pad_rows([self._model_mask(batch, i) for i in everyone], width, torch.device("cpu"))
        token_rewards = last_token_rewards(rewards.float(), mask)
        opts = self.options
        policy_lam = (opts.lam if opts.length_adaptive_alpha is None
                      else length_adaptive_lambda(mask.sum(dim=1), opts.length_adaptive_alpha))
        advantages, _ = gae_advantages(token_rewards, values, mask, opts.gamma, policy_lam)
        _, returns = gae_advantages(token_rewards, values, mask, opts.gamma, opts.critic_lam)
        if opts.whiten:
            in_loss = mask * batch.sample_mask[:, None]
            pool = torch.tensor([a for rank in all_gather(self.world, advantages[in_loss.bool()].tolist()) for a in rank])
            advantages = whiten(advantages, in_loss, pool=pool)
        lengths = [len(ids) for ids in batch.completion_ids]
        batch.token_advantages = [advantages[i, :length] for i, length in enumerate(lengths)]
        batch.returns = [returns[i, :length] for i, length in enumerate(lengths)]
        batch.old_values = old_values
        active = mask.bool()
        tokens, value_sum, return_sum = reduce(self.world, [active.sum().item(), values[active].sum().item(),
                                                            returns[active].sum().item()])
        return {"value/old_mean": value_sum / max(tokens, 1.0), "value/return_mean": return_sum / max(tokens, 1.0)}

    def update(self, batch: TrainBatch, generator: torch.Generator) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped value-loss updates over ``batch``, in the policy's mini-batches
        (one optimizer step each; a permutation of the whole batch drawn from ``generator``) of micro-batches
        (gradients accumulated, the loss divided by the whole mini-batch's tokens over all ranks). Samples out
        of the loss (overlong filtering) are out of this one too."""
        optim = self.cfg.optim
        total, local = batch.global_size or len(batch), batch.local_index()
        sums: dict[str, float] = {}
        grad_norms: list[float] = []
        self.model.train()
        for _ in range(optim.ppo_epochs):
            order = torch.randperm(total, generator=generator).tolist()
            for start in range(0, total, optim.mini_batch_size):
                mini = [local[p] for p in order[start : start + optim.mini_batch_size]
                        if p in local and batch.sample_mask[local[p]] > 0]
                denominator = reduce(self.world, [loss_denominator("token-mean", [batch.model_tokens(i) for i in mini])])[0]
                self.optimizer.zero_grad(set_to_none=True)
                for micro in _in_lockstep(self._micro_batches(batch, mini), self.world):
                    if not micro:
                        self._idle_pass(backward=True)
                        continue
                    values, mask = self._forward(batch, micro)
                    width = mask.shape[1]
                    loss, metrics = value_loss(
                        values, pad_rows([batch.old_values[i] for i in micro], width, values.device),
                        pad_rows([batch.returns[i] for i in micro], width, values.device), mask,
                        clip=self.options.value_clip, denominator=denominator)
                    (self.options.value_coef * loss).backward()
                    share = mask.sum().item() / max(denominator, 1.0)  # of the mini-batch's tokens, over all ranks
                    metrics = {"value/loss": loss.item(), **{key: value * share for key, value in metrics.items()}}
                    for key, value in metrics.items():
                        sums[key] = sums.get(key, 0.0) + value
                grad_norms.append(clip_grad_norm(self.model, optim.max_grad_norm))
                self.optimizer.step()
                self.scheduler.step()
        steps = max(len(grad_norms), 1)
        result = {key: value / steps for key, value in combine_metrics(self.world, sums).items()}
        result["value/grad_norm"] = sum(grad_norms) / steps
        result["value/lr"] = self.scheduler.get_last_lr()[0]
        return result

    def save(self, directory: Path) -> None:
        """The value model's full weights (written by rank 0), its optimizer (each rank its shard) and schedule into
        ``directory`` (a checkpoint's ``value/``). Every rank calls it."""
        if self.world.distributed:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = self.model.state_dict()
        if self.world.is_main:
            directory.mkdir(parents=True, exist_ok=True)
            save_file({name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}, directory / WEIGHTS_FILE)
            torch.save({"scheduler": self.scheduler.state_dict()}, directory / STATE_FILE)
        save_optimizer(directory / OPTIMIZER_DIR, self.model, self.optimizer)

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote (``--resume``), resharded onto this run's ranks."""
        if not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{directory.parent} has no value model ({VALUE_DIR}/{WEIGHTS_FILE}): it was not saved "
                                    "by a run with algorithm.estimator=gae; resume with the estimator it was trained with")
        state = load_file(directory / WEIGHTS_FILE)
        if self.world.distributed:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))
        else:
            self.model.load_state_dict(state)
        load_optimizer(directory, self.model, self.optimizer)
        self.scheduler.load_state_dict(torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)["scheduler"])

    def _model_mask(self, batch: TrainBatch, index: int) -> list[int]:
        return batch.loss_masks[index] if batch.loss_masks is not None else [1] * len(batch.completion_ids[index])

    def _micro_batches(self, batch: TrainBatch, indices: list[int]) -> list[list[int]]:
        lengths = [len(batch.prompt_ids[i]) + len(batch.completion_ids[i]) for i in indices]
        return [[indices[i] for i in bucket] for bucket in length_buckets(lengths, self.cfg.optim.micro_batch_size)]

    def _forward(self, batch: TrainBatch, chosen: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``[B, T]`` of the samples ``chosen`` and their model-token mask."""
        device = next(self.model.parameters()).device
        packed = pack([batch.prompt_ids[i] for i in chosen], [batch.completion_ids[i] for i in chosen], self.pad_id, device)
        mask = packed.completion_mask
        if batch.loss_masks is not None:
            mask = mask * pad_rows([batch.loss_masks[i] for i in chosen], mask.shape[1], device)
        values = self.model(packed.input_ids, packed.attention_mask, packed.prompt_lengths, packed.completion_ids)
        return values * mask, mask

    def _idle_pass(self, backward: bool) -> None:
        """A forward (and backward) of one token with zero weight: takes part in FSDP's collectives, changes nothing."""
        device = next(self.model.parameters()).device
        packed = pack([[self.pad_id]], [[self.pad_id]], self.pad_id, device)
        values = self.model(packed.input_ids, packed.attention_mask, packed.prompt_lengths, packed.completion_ids)
        if backward:
            (values.sum() * 0.0).backward()


def build_critic(cfg: TrainConfig, pad_id: int, build_optimizer, resume_from: Path | None,
                 world: World = SINGLE) -> Critic | None:
    """The :class:`Critic` of a ``gae`` run (None for every other estimator): from the policy's starting checkpoint
    (``model.path``), or as saved in ``resume_from``; sharded over the ranks like the policy. ``build_optimizer(model,
    cfg)`` is the trainer's AdamW and schedule, given ``gae.value_lr``."""
    if not is_token_level(cfg.algorithm.estimator):
        return None
    dtype = training_dtype(cfg)
    value_model = ValueModel.from_pretrained(cfg.model.path, dtype)
    model = shard_policy(value_model, world, dtype, layers_of=value_model.backbone)
    value_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=cfg.algorithm.gae.value_lr))
    critic = Critic(model, *build_optimizer(model, value_cfg), cfg, pad_id, world)
    if resume_from is not None:
        critic.load(resume_from / VALUE_DIR)
    return critic


def training_dtype(cfg: TrainConfig) -> torch.dtype:
    """The value model's dtype: the policy's training dtype."""
    from rlvr.rollout.base import resolve_dtype

    return getattr(torch, resolve_dtype(cfg.model.dtype, torch.cuda.is_available()))
