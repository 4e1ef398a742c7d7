"""The value model of PPO (``algorithm.estimator: gae``): per-token values, GAE advantages, its own updates.

A separate model rather than a value head on the policy, as verl and OpenRLHF do: the policy stays a plain
causal LM (its checkpoints load in vLLM and ``from_pretrained`` as they are), the value loss never pulls on the
policy's features, and the two get their own learning rates. It costs a second backbone in memory and one more
forward per sample; for a head on the policy that would be shared. The value model is the policy's starting
checkpoint without its LM head, plus a scalar head initialised to zero (every value starts at 0, so the first
advantages are the plain discounted rewards).

One process only for now: the value model is not sharded (``rlvr.distributed.shard_policy``), and the trainer
refuses ``gae`` in a data-parallel job.
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
from rlvr.checkpoint import VALUE_DIR
from rlvr.train_config import TrainConfig
from rlvr.update import TrainBatch, length_buckets, loss_denominator, pack, pad_rows

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
    """The value model with its optimizer and schedule: GAE advantages for a batch, then value updates."""

    def __init__(self, model: ValueModel, optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig, pad_id: int):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.cfg, self.options, self.pad_id = cfg, cfg.algorithm.gae, pad_id

    def warming_up(self, step: int) -> bool:
        """Whether ``step`` is one of the first ``value_warmup_steps``, in which only the value model learns."""
        return step <= self.options.value_warmup_steps

    @torch.no_grad()
    def values(self, batch: TrainBatch, indices: list[int]) -> list[torch.Tensor]:
        """The values of the given samples' completion tokens, one ``[T_i]`` CPU tensor each."""
        self.model.eval()
        out: dict[int, torch.Tensor] = {}
        for micro in self._micro_batches(batch, indices):
            values, _ = self._forward(batch, micro)
            for row, index in enumerate(micro):
                out[index] = values[row, : len(batch.completion_ids[index])].cpu()
        return [out[i] for i in indices]

    def advantages(self, batch: TrainBatch, rewards: torch.Tensor) -> dict[str, float]:
        """Fill ``batch.token_advantages``, ``returns`` and ``old_values`` from the samples' (shaped) ``rewards``
        ``[N]``: values now, the reward on each sample's last model token, GAE with the policy's lambda (VAPO:
        length-adaptive) for the advantages (whitened over the batch's tokens in the loss) and with
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
            advantages = whiten(advantages, mask * batch.sample_mask[:, None])
        lengths = [len(ids) for ids in batch.completion_ids]
        batch.token_advantages = [advantages[i, :length] for i, length in enumerate(lengths)]
        batch.returns = [returns[i, :length] for i, length in enumerate(lengths)]
        batch.old_values = old_values
        active = mask.bool()
        return {"value/old_mean": values[active].mean().item() if active.any() else 0.0,
                "value/return_mean": returns[active].mean().item() if active.any() else 0.0}

    def update(self, batch: TrainBatch, generator: torch.Generator) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped value-loss updates over ``batch``, in the policy's mini-batches
        (one optimizer step each) of micro-batches (gradients accumulated, the loss divided by the whole
        mini-batch's tokens). Samples out of the loss (overlong filtering) are out of this one too."""
        optim = self.cfg.optim
        in_loss = [i for i in range(len(batch)) if batch.sample_mask[i] > 0]
        sums: dict[str, float] = {}
        steps = 0
        self.model.train()
        for _ in range(optim.ppo_epochs):
            order = [in_loss[i] for i in torch.randperm(len(in_loss), generator=generator).tolist()]
            for start in range(0, len(order), optim.mini_batch_size):
                mini = order[start : start + optim.mini_batch_size]
                denominator = loss_denominator("token-mean", [batch.model_tokens(i) for i in mini])
                self.optimizer.zero_grad(set_to_none=True)
                metrics: dict[str, float] = {}
                for micro in self._micro_batches(batch, mini):
                    values, mask = self._forward(batch, micro)
                    width = mask.shape[1]
                    loss, micro_metrics = value_loss(
                        values, pad_rows([batch.old_values[i] for i in micro], width, values.device),
                        pad_rows([batch.returns[i] for i in micro], width, values.device), mask,
                        clip=self.options.value_clip, denominator=denominator)
                    (self.options.value_coef * loss).backward()
                    share = mask.sum().item() / max(denominator, 1.0)
                    metrics["value/loss"] = metrics.get("value/loss", 0.0) + loss.item()
                    for key, value in micro_metrics.items():
                        metrics[key] = metrics.get(key, 0.0) + value * share
                metrics["value/grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), optim.max_grad_norm).item()
                self.optimizer.step()
                self.scheduler.step()
                steps += 1
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
        result = {key: value / max(steps, 1) for key, value in sums.items()}
        result["value/lr"] = self.scheduler.get_last_lr()[0]
        return result

    def save(self, directory: Path) -> None:
        """The value model's weights, optimizer and schedule into ``directory`` (a checkpoint's ``value/``)."""
        directory.mkdir(parents=True, exist_ok=True)
        save_file({name: tensor.detach().contiguous().cpu() for name, tensor in self.model.state_dict().items()},
                  directory / WEIGHTS_FILE)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, directory / STATE_FILE)

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote (``--resume``)."""
        if not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{directory.parent} has no value model ({VALUE_DIR}/{WEIGHTS_FILE}): it was not saved "
                                    "by a run with algorithm.estimator=gae; resume with the estimator it was trained with")
        self.model.load_state_dict(load_file(directory / WEIGHTS_FILE, device=str(next(self.model.parameters()).device)))
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

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


def build_critic(cfg: TrainConfig, pad_id: int, build_optimizer, resume_from: Path | None) -> Critic | None:
    """The :class:`Critic` of a ``gae`` run (None for every other estimator): from the policy's starting checkpoint
    (``model.path``), or as saved in ``resume_from``. ``build_optimizer(model, cfg)`` is the trainer's AdamW and
    schedule, given ``gae.value_lr``."""
    if not is_token_level(cfg.algorithm.estimator):
        return None
    model = ValueModel.from_pretrained(cfg.model.path, training_dtype(cfg))
    value_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=cfg.algorithm.gae.value_lr))
    critic = Critic(model, *build_optimizer(model, value_cfg), cfg, pad_id)
    if resume_from is not None:
        critic.load(resume_from / VALUE_DIR)
    return critic


def training_dtype(cfg: TrainConfig) -> torch.dtype:
    """The value model's dtype: the policy's training dtype."""
    from rlvr.rollout.base import resolve_dtype

    return getattr(torch, resolve_dtype(cfg.model.dtype, torch.cuda.is_available()))
