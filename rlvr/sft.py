"""Supervised fine-tuning: causal-LM loss on the completion tokens of (prompt, target) pairs.

The cold start of the R1 recipe, and the demo's warm start: the prompt is the task's own template
(the one ``rlvr train`` and ``rlvr eval`` render), the target is the example's worked solution
(``metadata["solution"]`` from the procedural generators and from data sets with a solution column).
Prompt tokens are context only; the loss is the mean negative log-likelihood of the target tokens
and the end-of-sequence token after them, over all target tokens of an optimizer batch, so that
splitting a batch into micro-batches does not change the gradient.

    from rlvr import config
    from rlvr.sft import SFTConfig, train
    cfg = config.load(SFTConfig, "configs/demo_sft.yaml", ["optim.lr=1e-3"])
    train(cfg)   # writes a Hugging Face model directory to cfg.output.dir
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rlvr.config import ConfigError, option
from rlvr.train_config import TASKS, TEMPLATES, ModelConfig


@dataclass
class SFTDataConfig:
    task: str = option("arithmetic", "Registered task (see `rlvr tasks list`) whose examples carry a target, e.g. arithmetic, gsm8k.",
                       choices=TASKS)
    path: str | None = option(None, "Local data file (jsonl/json/parquet) to read instead of the task's default source.")
    split: str | None = option(None, "Data split; null uses the task's default split.")
    limit: int | None = option(None, "Use only the first N examples (after shuffling with data.seed).")
    options: dict[str, Any] = option({}, "Task options: generator knobs or column names, e.g. {solution_column: answer}.")
    target_field: str = option("solution", "Example metadata field holding the target completion (the worked solution).")
    template: str = option("auto", "Prompt template: auto, base, chat or code (the same one RL and eval use).", choices=TEMPLATES)
    max_tokens: int = option(1024, "Examples whose prompt + target exceed this many tokens are dropped, with a count.")
    seed: int = option(0, "Seed of the data shuffle and order.")


@dataclass
class SFTOptimConfig:
    epochs: float = option(1.0, "Passes over the data (fractions allowed); ignored when steps > 0.")
    steps: int = option(0, "Optimizer steps (0: as many as data.epochs needs).")
    batch_size: int = option(32, "Examples per optimizer step.")
    micro_batch_size: int = option(8, "Examples per forward/backward; a batch is split into length-sorted micro-batches.")
    lr: float = option(1e-5, "Peak learning rate of AdamW.")
    warmup_steps: int = option(0, "Optimizer steps of linear warm-up from 0 to optim.lr.")
    min_lr_ratio: float = option(0.1, "Cosine decay ends at this fraction of optim.lr.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    betas: list[float] = option([0.9, 0.95], "AdamW betas.")
    max_grad_norm: float = option(1.0, "Gradient clipping threshold on the global norm (0: off).")
    seed: int = option(0, "Seed of the torch random state.")


@dataclass
class SFTOutputConfig:
    dir: str = option("runs/sft", "Where the fine-tuned model, its tokenizer, sft_config.yaml and metrics.jsonl go.")
    log_every: int = option(10, "Print a progress line (loss, lr, ETA) every N optimizer steps.")


@dataclass
class SFTConfig:
    model: ModelConfig = option(ModelConfig(), "The model to fine-tune (the same options as `rlvr train`).")
    data: SFTDataConfig = option(SFTDataConfig(), "Prompts and targets.")
    optim: SFTOptimConfig = option(SFTOptimConfig(), "Optimisation schedule and batch sizes.")
    output: SFTOutputConfig = option(SFTOutputConfig(), "The saved model and logs.")


@dataclass
class SFTExample:
    """One tokenised training pair: the loss is taken on ``completion_ids`` only."""

    prompt_ids: list[int]
    completion_ids: list[int]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


@dataclass
class SFTResult:
    """What :func:`train` did."""

    output_dir: Path
    steps: int
    examples: int
    dropped: int
    final_loss: float
    seconds: float


def check_config(cfg: SFTConfig) -> None:
    """Raise :class:`ConfigError` naming the option when values cannot work together."""
    from rlvr import config

    config.validate(cfg)
    optim = cfg.optim
    if optim.batch_size < 1 or optim.micro_batch_size < 1:
        raise ConfigError("optim.batch_size and optim.micro_batch_size must be at least 1")
    if optim.micro_batch_size > optim.batch_size:
        raise ConfigError(
            f"optim.micro_batch_size ({optim.micro_batch_size}) is larger than optim.batch_size "
            f"({optim.batch_size}); lower it to at most the batch size"
        )
    if optim.steps < 0 or (optim.steps == 0 and optim.epochs <= 0):
        raise ConfigError("set optim.steps to a positive number of steps, or optim.epochs > 0 with optim.steps=0")
    if optim.lr <= 0 or not 0 <= optim.min_lr_ratio <= 1:
        raise ConfigError("need optim.lr > 0 and 0 <= optim.min_lr_ratio <= 1")
    if len(optim.betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers, e.g. [0.9, 0.95], got {optim.betas}")
    if cfg.data.max_tokens < 2:
        raise ConfigError("data.max_tokens must be at least 2 (one prompt and one target token)")
    if cfg.output.log_every < 1:
        raise ConfigError("output.log_every must be at least 1")


def load_examples(data: SFTDataConfig) -> list[tuple[str, Any]]:
    """``(target text, example)`` pairs of the configured task; fails naming the missing target field."""
    import tasks

    examples = tasks.load(data.task, split=data.split, path=data.path, limit=data.limit, seed=data.seed, **data.options)
    if not examples:
        raise ConfigError(f"task {data.task!r} gave no examples; check data.path, data.split and data.limit")
    pairs = []
    for example in examples:
        target = example.metadata.get(data.target_field)
        if not isinstance(target, str) or not target.strip():
            fields = ", ".join(sorted(example.metadata)) or "none"
            raise ConfigError(
                f"example {example.id!r} of task {data.task!r} has no target text in metadata[{data.target_field!r}] "
                f"(its metadata fields: {fields}). Set data.target_field to the field that holds the worked "
                "solution, or map a data file's column with data.options={solution_column: NAME}."
            )
        pairs.append((target, example))
    return pairs


def tokenize_examples(
    pairs: list[tuple[str, Any]], tokenizer: Any, template: str, max_tokens: int
) -> tuple[list[SFTExample], int]:
    """Tokenised examples and how many were dropped for exceeding ``max_tokens``.

    Prompt and target are tokenised separately and concatenated, exactly as the RL sampler sees a prompt
    and the tokens it generates after it; the end-of-sequence token closes the target so that the model
    learns to stop.
    """
    import tasks

    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no end-of-sequence token; SFT needs one to teach the model to stop")
    kept, dropped = [], 0
    for target, example in pairs:
        prompt_ids = tasks.encode_prompt(example, tokenizer, template)
        completion_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt_ids) + len(completion_ids) > max_tokens:
            dropped += 1
            continue
        kept.append(SFTExample(prompt_ids, completion_ids))
    return kept, dropped


def collate(batch: list[SFTExample], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors in the layout of :func:`rlvr.policy.completion_logprobs`."""
    import torch

    length = max(len(example) for example in batch)
    completion_length = max(len(example.completion_ids) for example in batch)
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
    completion_ids = torch.full((len(batch), completion_length), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((len(batch), completion_length), dtype=torch.long)
    for row, example in enumerate(batch):
        ids = example.prompt_ids + example.completion_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        completion_ids[row, : len(example.completion_ids)] = torch.tensor(example.completion_ids)
        completion_mask[row, : len(example.completion_ids)] = 1
    prompt_lengths = torch.tensor([len(example.prompt_ids) for example in batch])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "prompt_lengths": prompt_lengths,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }


def completion_nll_sum(model: Any, batch: list[SFTExample], pad_id: int) -> tuple[Any, int]:
    """Summed negative log-likelihood of the completion tokens of ``batch`` and how many there are."""
    from rlvr.policy import completion_logprobs

    device = next(model.parameters()).device
    tensors = {name: value.to(device) for name, value in collate(batch, pad_id).items()}
    stats = completion_logprobs(model, **tensors)
    mask = tensors["completion_mask"]
    return -(stats.logprobs * mask).sum(), int(mask.sum())


def micro_batches(batch: list[SFTExample], size: int) -> list[list[SFTExample]]:
    """Split ``batch`` into micro-batches of similar length, so that little compute goes to padding."""
    ordered = sorted(batch, key=len)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def batch_schedule(count: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Example indices of each optimizer step: shuffled epochs, cut into batches, as many as ``steps``."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        epoch = list(range(count))
        rng.shuffle(epoch)
        order.extend(epoch)
    return [order[step * batch_size : (step + 1) * batch_size] for step in range(steps)]


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based): linear warm-up, then cosine decay."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def total_steps(optim: SFTOptimConfig, examples: int) -> int:
    if optim.steps > 0:
        return optim.steps
    return max(1, math.ceil(optim.epochs * examples / optim.batch_size))


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def train(cfg: SFTConfig, log: TextIO | None = None, on_step: Callable[[dict[str, Any]], None] | None = None) -> SFTResult:
    """Fine-tune ``cfg.model.path`` on ``cfg.data`` and save it to ``cfg.output.dir``.

    A progress line goes to ``log`` (stderr by default) every ``output.log_every`` steps; ``on_step``
    gets each step's metrics (step, loss, lr, tokens, elapsed, eta).
    """
    import torch

    from rlvr import config
    from rlvr.models import resolve_model_path
    from rlvr.policy import load_policy

    log = log if log is not None else sys.stderr
    check_config(cfg)
    started = time.monotonic()
    torch.manual_seed(cfg.optim.seed)
    model_path = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    model, tokenizer = load_policy(model_path, cfg.model.dtype, cfg.model.gradient_checkpointing, cfg.model.cpu_threads)
    examples, dropped = tokenize_examples(load_examples(cfg.data), tokenizer, cfg.data.template, cfg.data.max_tokens)
    if not examples:
        raise ConfigError(
            f"all {dropped} examples are longer than data.max_tokens={cfg.data.max_tokens} tokens; raise data.max_tokens"
        )
    steps = total_steps(cfg.optim, len(examples))
    print(
        f"sft: {len(examples)} examples ({dropped} dropped as longer than {cfg.data.max_tokens} tokens), "
        f"{steps} steps of {cfg.optim.batch_size}",
        file=log,
        flush=True,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
    )
    output_dir = Path(cfg.output.dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    loss_value = float("nan")
    train_started = time.monotonic()
    with (output_dir / "metrics.jsonl").open("w") as metrics_file:
        for step, indices in enumerate(batch_schedule(len(examples), cfg.optim.batch_size, steps, cfg.data.seed)):
            batch = [examples[index] for index in indices]
            tokens = sum(len(example.completion_ids) for example in batch)
            loss_sum = 0.0
            for micro in micro_batches(batch, cfg.optim.micro_batch_size):
                nll, _ = completion_nll_sum(model, micro, pad_id)
                (nll / tokens).backward()
                loss_sum += float(nll.detach())
            if cfg.optim.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss_sum / tokens
            elapsed = time.monotonic() - train_started
            metrics = {
                "step": step + 1,
                "loss": loss_value,
                "lr": lr,
                "tokens": tokens,
                "elapsed": elapsed,
                "eta": elapsed / (step + 1) * (steps - step - 1),
            }
            metrics_file.write(json.dumps(metrics) + "\n")
            metrics_file.flush()
            if on_step is not None:
                on_step(metrics)
            if (step + 1) % cfg.output.log_every == 0 or step + 1 == steps:
                print(
                    f"sft step {step + 1}/{steps}  loss {loss_value:.4f}  lr {lr:.2e}  "
                    f"elapsed {format_duration(elapsed)}  ETA {format_duration(metrics['eta'])}",
                    file=log,
                    flush=True,
                )
    model.eval()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "sft_config.yaml").write_text(config.render(cfg) + "\n")
    seconds = time.monotonic() - started
    print(f"sft: saved {output_dir} in {format_duration(seconds)} (final loss {loss_value:.4f})", file=log, flush=True)
    return SFTResult(output_dir, steps, len(examples), dropped, loss_value, seconds)
