"""``rlvr train``: prompts -> grouped samples -> verified rewards -> advantages -> clipped policy
updates -> new weights into the sampler, step after step. :func:`train` is the whole loop."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

import rlvr.rollout
import tasks
from rlvr import checkpoint, config, distributed, faults, lora
from rlvr.algorithms import compute_advantages, shape_rewards
from rlvr.critic import Critic, build_critic
from rlvr.distributed import SINGLE, World
from rlvr.evaluation import evaluate_with_engine, load_task, logging_metrics
from rlvr.models import resolve_model_path
from rlvr.policy import load_policy
from rlvr.rollout.base import resolve_dtype
from rlvr.rollout.tools import with_tools
from rlvr.sampling import Prompt, PromptStream, Rewarder, Rollouts, collect_rollouts, needs_greedy_baseline
from rlvr.tracking import MetricsLogger
from rlvr.train_config import TrainConfig
from rlvr.update import TrainBatch, loss_aggregation, per_sample_logprobs, update_policy


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train according to ``cfg``; returns the directory of the final checkpoint. Started by torchrun, this
    process is one rank of a data-parallel job (see :mod:`rlvr.distributed`)."""
    config.validate(cfg)  # a config built in Python has not been through the loader's checks
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=resolve_model_path(cfg.model.path, cfg.model.cache_dir)))
    world = distributed.init(cfg.distributed.timeout)
    try:
        return _train(cfg, resume, world)
    finally:
        distributed.shutdown(world)


@dataclasses.dataclass
class Learner:
    """What the updates change and a checkpoint keeps: the policy with its optimizer and schedule, PPO's value
    model (``gae``), the frozen reference of the KL term, and the update's random generator."""
    policy: torch.nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    reference: torch.nn.Module | None = None
    critic: Critic | None = None


def _train(cfg: TrainConfig, resume: bool, world: World) -> Path:
    check_world(cfg, world)
    run_dir = Path(cfg.checkpoint.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        (run_dir / "config.yaml").write_text(config.render(cfg) + "\n")
    torch.manual_seed(cfg.optim.seed)
    resume_from = checkpoint.latest(run_dir) if resume else None
    learner = build_learner(cfg, world, resume_from)
    stream = PromptStream(build_prompts(cfg, learner.tokenizer), cfg.data.seed)
    start_step = restore(resume_from, learner, stream) if resume_from is not None else 0
    if world.is_main and resume:
        print(f"resuming from {resume_from} (step {start_step})" if resume_from else f"no checkpoint in {run_dir}: starting from step 0", flush=True)
    engine, adapter_sync = start_engine(cfg, learner, resume_from, start_step)
    eval_examples = load_eval_examples(cfg) if cfg.eval.every else {}
    rewarder = Rewarder(verifier_options(cfg), distributed.worker_share(cfg.verifier.workers, world), cfg.verifier.options,
                        ttrl_trained=cfg.rollout.group_size if cfg.verifier.ttrl_votes else None)
    logger = MetricsLogger(run_dir, cfg.optim.steps, start_step, cfg.logging.tensorboard,
                           cfg.logging.wandb_project, config.to_dict(cfg), wandb_mode=cfg.logging.wandb_mode) if world.is_main else None
    last_saved = None
    nonfinite = faults.NonFiniteGuard(cfg.faults.max_nonfinite_steps)
    stop = faults.StopSignals().install()
    try:
        if cfg.verifier.ttrl_votes:  # inside try: the engine is closed when this fails
            rewarder.check_votable({prompt.example.verifier for prompt in stream.prompts})
        for step in range(start_step + 1, cfg.optim.steps + 1):
            started = time.monotonic()
            engine.wake_up()
            try:
                rollouts, metrics = collect_rollouts(engine, stream, rewarder, cfg, step, world)
            except Exception as error:  # the sampler died (a killed worker, an engine error): no step is half done
                raise faults.engine_failed(cfg.rollout.engine, step, error, checkpoint.latest(run_dir)) from error
            engine.sleep()
            faults.check_verifier_failures(step, metrics, cfg.faults.max_verifier_failure_share, world)
            note = learn(rollouts, metrics, learner, engine, adapter_sync, cfg, step, world)
            if cfg.eval.every and step % cfg.eval.every == 0 and world.is_main:  # the other ranks wait for it
                metrics.update(evaluate_during_training(engine, learner.tokenizer, eval_examples, cfg, run_dir, step))
            metrics["time/step"] = time.monotonic() - started
            tokens = distributed.reduce(world, [sum(map(len, rollouts.completion_ids))])[0]
            metrics["tokens_per_second"] = tokens / metrics["time/step"]
            if logger is not None:
                logger.log(step, metrics, note)
            nonfinite.observe(step, metrics.get("update/nonfinite_skipped", 0.0))
            stopping = stop.requested(world) and step < cfg.optim.steps  # a preemption signal: checkpoint, exit
            if stopping or step % cfg.checkpoint.every == 0 or step == cfg.optim.steps:
                last_saved = save_checkpoint(run_dir, step, learner, stream, cfg, world)
            if stopping:
                raise stop.interrupted(step, last_saved)
    finally:
        stop.restore()
        engine.close()
        if adapter_sync is not None:
            adapter_sync.close()
        if logger is not None:
            logger.close()
    final = last_saved or checkpoint.latest(run_dir)
    if world.is_main:
        (run_dir / "final").write_text(str(final.name if final else "") + "\n")
    return final


def build_learner(cfg: TrainConfig, world: World, resume_from: Path | None) -> Learner:
    """The policy (from ``resume_from`` when given; with LoRA the base from ``model.path`` and the adapter from
    ``resume_from``), sharded over the ranks, its optimizer, the reference and the value model."""
    adapter = cfg.model.lora.rank > 0
    weights_from = cfg.model.path if adapter else str(resume_from or cfg.model.path)
    policy, tokenizer = load_policy(weights_from, cfg.model.dtype, cfg.model.gradient_checkpointing, cfg.model.cpu_threads)
    if adapter:
        lora.attach(policy, cfg.model.lora, resume_from)
    # with LoRA the reference is the policy with its adapter off (build_train_batch): no second model
    reference = load_policy(cfg.model.path, cfg.model.dtype)[0].eval() if cfg.algorithm.kl_coef and not adapter else None
    compute_dtype = getattr(torch, resolve_dtype(cfg.model.dtype, torch.cuda.is_available()))
    policy = distributed.shard_policy(policy, world, compute_dtype)
    reference = distributed.shard_policy(reference, world, compute_dtype) if reference is not None else None
    optimizer, scheduler = build_optimizer(policy, cfg)
    critic = build_critic(cfg, tokenizer.pad_token_id, build_optimizer, resume_from, world)  # PPO's value model (gae), else None
    return Learner(policy, tokenizer, optimizer, scheduler, torch.Generator().manual_seed(cfg.optim.seed), reference, critic)


def restore(resume_from: Path, learner: Learner, stream: PromptStream) -> int:
    """The optimizer, schedule, data order and update generator of checkpoint ``resume_from`` (its weights were
    loaded with the policy); returns its step."""
    state = checkpoint.load_state(resume_from)
    checkpoint.load_optimizer(resume_from, learner.policy, learner.optimizer)
    learner.scheduler.load_state_dict(state["scheduler"])
    stream.load_state_dict(state["data"])
    learner.generator.set_state(state["update_rng"])
    return state["step"]


def start_engine(cfg: TrainConfig, learner: Learner, resume_from: Path | None, start_step: int):
    """The sampler, holding the policy's weights (wrapped for tool calls when ``rollout.tools.name`` is set), and,
    with LoRA, the adapter sync that feeds it; ``(engine, adapter_sync or None)``."""
    adapter = cfg.model.lora.rank > 0
    engine = rlvr.rollout.get(cfg.rollout.engine)(
        cfg.model.path if adapter else str(resume_from or cfg.model.path), max_model_len=max_model_len(cfg),
        seed=cfg.optim.seed, dtype=cfg.model.dtype, gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
        sleep_between_steps=cfg.rollout.sleep_between_steps,
        batch_sequences=cfg.optim.prompts_per_step * max(cfg.rollout.group_size, cfg.verifier.ttrl_votes),  # TTRL: all votes
        **{**lora.engine_options(cfg.model.lora, cfg.rollout.engine), **cfg.rollout.engine_options},
    )
    adapter_sync = lora.EngineSync(engine, cfg.model.lora) if adapter else None
    if adapter_sync is not None and resume_from is not None:  # the engine started from the base model
        adapter_sync(learner.policy, start_step)
    return with_tools(engine, learner.tokenizer, cfg.rollout.tools), adapter_sync


def learn(rollouts: Rollouts, metrics: dict[str, float], learner: Learner, engine, adapter_sync, cfg: TrainConfig,
          step: int, world: World) -> str | None:
    """One step's update from its rollouts: the batch (shaped rewards, advantages, log-probs), the models' update,
    the new weights into the sampler. Adds its metrics to ``metrics``; returns why the step changed nothing or
    skipped updates, else None."""
    metrics["update/nothing_to_learn"] = 1.0
    if rollouts.total_groups == 0:
        return "no update: no group carried signal after all sampling rounds"
    pad_id = learner.tokenizer.pad_token_id
    batch, shaping_metrics = build_train_batch(rollouts, cfg, learner.policy, learner.reference, pad_id, world, learner.critic)
    metrics.update(shaping_metrics)
    if metrics["samples/in_loss"] == 0:
        return "no update: every sample is masked out of the loss (overlong_filter: all truncated)"
    metrics["update/nothing_to_learn"] = 0.0
    train_started = time.monotonic()
    updated, policy_changed = update_models(learner, batch, cfg, world, step)
    metrics.update(updated)
    sync_started = time.monotonic()
    if policy_changed and adapter_sync is not None:
        adapter_sync(learner.policy, step)
    elif policy_changed:
        engine.update_weights(distributed.full_parameters(learner.policy))
    metrics["time/train"] = sync_started - train_started
    metrics["time/weight_sync"] = time.monotonic() - sync_started
    if not policy_changed:
        return "value warm-up: only the value model learned (algorithm.gae.value_warmup_steps)"
    if metrics["update/nonfinite_skipped"]:
        return (f"{metrics['update/nonfinite_skipped']:.0f} update(s) skipped: non-finite loss or gradient "
                f"(stop after {cfg.faults.max_nonfinite_steps} steps in a row)")
    return None


def save_checkpoint(run_dir: Path, step: int, learner: Learner, stream: PromptStream, cfg: TrainConfig, world: World) -> Path:
    """The checkpoint of ``step`` (never of non-finite weights); a failed write leaves the last good one the latest."""
    faults.require_finite_weights(learner.policy.named_parameters(), world)
    try:
        return checkpoint.save(run_dir, step, learner.policy, learner.tokenizer, {
            "scheduler": learner.scheduler.state_dict(), "data": stream.state_dict(), "update_rng": learner.generator.get_state(),
        }, cfg.checkpoint.keep_last, learner.optimizer, world, merged=cfg.model.lora.rank > 0 and merge_lora_at(cfg, step),
            critic=learner.critic)
    except checkpoint.WRITE_ERRORS as error:  # a full disk, a lost mount
        raise checkpoint.failed(run_dir, step, error) from error


def check_world(cfg: TrainConfig, world: World) -> None:
    """Every rank needs at least one prompt of each sampling round."""
    if cfg.optim.prompts_per_step < world.size:
        raise ValueError(f"optim.prompts_per_step={cfg.optim.prompts_per_step} is less than the {world.size} ranks of this "
                         "job: each rank samples a share of a step's prompts; raise it or start fewer ranks")


def update_models(learner: Learner, batch: TrainBatch, cfg: TrainConfig, world: World, step: int) -> tuple[dict[str, float], bool]:
    """The value model's update (PPO with ``gae``), then the policy's unless the value model is still warming up
    (``algorithm.gae.value_warmup_steps``); returns the metrics and whether the policy changed."""
    critic = learner.critic
    metrics = critic.update(batch, learner.generator) if critic is not None else {}
    if critic is not None and critic.warming_up(step):
        return {**metrics, "update/nonfinite_skipped": 0.0}, False
    return {**metrics, **update_policy(learner.policy, learner.optimizer, learner.scheduler, batch, cfg,
                                       learner.tokenizer.pad_token_id, learner.generator, world)}, True


def merge_lora_at(cfg: TrainConfig, step: int) -> bool:
    """Whether the checkpoint of ``step`` of a LoRA run also holds the merged model (``checkpoint.merge_lora``)."""
    return cfg.checkpoint.merge_lora == "every" or (cfg.checkpoint.merge_lora == "final" and step == cfg.optim.steps)


def build_prompts(cfg: TrainConfig, tokenizer) -> list[Prompt]:
    """Load the task, render each example with the prompt template, drop over-long prompts."""
    examples = tasks.load(cfg.data.task, split=cfg.data.split, path=cfg.data.path, limit=cfg.data.limit, seed=cfg.data.seed,
                          require_answers=not cfg.verifier.ttrl_votes, **cfg.data.options)  # TTRL needs no gold answers
    prompts, dropped = [], 0
    for example in examples:
        if cfg.verifier.name != "task":  # e.g. the random-reward control scores every example
            example = dataclasses.replace(example, verifier=cfg.verifier.name)
        ids = tasks.encode_prompt(example, tokenizer, cfg.data.template)
        if len(ids) > cfg.data.max_prompt_tokens:
            dropped += 1
        else:
            prompts.append(Prompt(example, ids))
    if dropped:
        print(f"dropped {dropped} of {len(examples)} prompts longer than data.max_prompt_tokens="
              f"{cfg.data.max_prompt_tokens}", flush=True)
    return prompts


def load_eval_examples(cfg: TrainConfig) -> dict[str, list]:
    return {name: load_task(name, cfg.eval.split, limit=cfg.eval.limit, **cfg.eval.options) for name in cfg.eval.tasks}


def evaluate_during_training(engine, tokenizer, examples: dict[str, list], cfg: TrainConfig, run_dir: Path, step: int) -> dict[str, float]:
    """Evaluate the current weights with the running engine (the code path of ``rlvr eval``); the
    full results go to ``eval/step-N.json``, the headline numbers into the step's metrics."""
    engine.wake_up()
    results = evaluate_with_engine(
        engine, tokenizer, examples, n=cfg.eval.n, max_tokens=cfg.rollout.max_new_tokens,
        temperature=cfg.eval.temperature, top_p=cfg.eval.top_p, template=cfg.data.template, seed=cfg.optim.seed,
    )
    engine.sleep()
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / f"step-{step:06d}.json").write_text(json.dumps(results, indent=1))
    return logging_metrics(results)


def build_train_batch(rollouts: Rollouts, cfg: TrainConfig, policy, reference, pad_id: int,
                      world: World = SINGLE, critic: Critic | None = None) -> tuple[TrainBatch, dict[str, float]]:
    """Shape rewards for length, compute group advantages (or, with a ``critic``, per-token GAE advantages),
    and the log-probs the loss compares to.

    Shaping and advantages are computed over the whole batch (every rank's scores, in batch order: some
    estimators normalise over the batch), then each rank keeps its samples' values."""
    scores = distributed.gather_by_position(world, rollouts.positions, {
        "rewards": rollouts.rewards, "lengths": [sum(mask) for mask in rollouts.loss_masks],  # the model's tokens
        "truncated": rollouts.truncated, "correct": rollouts.correct, "baselines": rollouts.baseline_rewards,
        "baseline_lengths": rollouts.baseline_lengths, "baseline_truncated": rollouts.baseline_truncated,
    })
    shaped, sample_mask = shape_rewards(
        torch.tensor(scores["rewards"]), torch.tensor(scores["lengths"], dtype=torch.float32), torch.tensor(scores["truncated"]),
        rollouts.group_size, max_len=cfg.rollout.max_new_tokens, correct=torch.tensor(scores["correct"]),
        **dataclasses.asdict(cfg.algorithm.length),
    )
    mine = torch.tensor(rollouts.positions, dtype=torch.long)
    if critic is not None:  # per-token advantages from the value model, below
        advantages = torch.zeros(len(shaped))
    else:
        baseline = shaped_baselines(scores, cfg) if needs_greedy_baseline(cfg) else None
        advantages = compute_advantages(shaped, rollouts.group_size, cfg.algorithm.estimator, baseline=baseline)
    batch = TrainBatch(
        prompt_ids=rollouts.prompt_ids, completion_ids=rollouts.completion_ids, advantages=advantages[mine],
        sample_mask=sample_mask.float()[mine], sampler_logprobs=rollouts.sampler_logprobs,
        positions=rollouts.positions, global_size=len(shaped),
        loss_masks=rollouts.loss_masks if any(use is not None for use in rollouts.tool_uses) else None,
    )
    everyone = list(range(len(batch)))
    mini_batches = -(-len(shaped) // cfg.optim.mini_batch_size)
    if cfg.optim.ppo_epochs > 1 or mini_batches > 1 or cfg.algorithm.tis_cap is not None:
        batch.old_logprobs = per_sample_logprobs(policy, batch, everyone, cfg, pad_id, world)
    if reference is not None:
        batch.ref_logprobs = per_sample_logprobs(reference, batch, everyone, cfg, pad_id, world)
    elif cfg.algorithm.kl_coef and cfg.model.lora.rank:
        with lora.adapter_disabled(policy):
            batch.ref_logprobs = per_sample_logprobs(policy, batch, everyone, cfg, pad_id, world)
    metrics = {"reward/shaped_mean": shaped.mean().item(), "samples/in_loss": sample_mask.float().sum().item()}
    if critic is not None:
        metrics.update(critic.advantages(batch, shaped[mine]))
    return batch, metrics


def shaped_baselines(scores: dict[str, list], cfg: TrainConfig) -> torch.Tensor:
    """ReMax: each sample's greedy-baseline reward ``[N]`` shaped for length like the samples' own rewards, the
    greedy sample a group of its own (a group-relative shaper such as Kimi's gives it 0), so that a penalty both
    pay does not bias the advantage."""
    rewards = torch.tensor(scores["baselines"], dtype=torch.float32)
    shaped, _ = shape_rewards(rewards, torch.tensor(scores["baseline_lengths"], dtype=torch.float32),
                              torch.tensor(scores["baseline_truncated"]), 1, max_len=cfg.rollout.max_new_tokens,
                              **dataclasses.asdict(cfg.algorithm.length))
    return shaped


def build_optimizer(policy, cfg: TrainConfig):
    """AdamW with linear warm-up, then a constant, linear or cosine schedule over all optimizer steps."""
    optim = cfg.optim
    trainable = [parameter for parameter in policy.parameters() if parameter.requires_grad]  # LoRA: the adapter only
    optimizer = torch.optim.AdamW(trainable, lr=optim.lr, weight_decay=optim.weight_decay)
    per_step = optim.ppo_epochs * -(-optim.prompts_per_step * cfg.rollout.group_size // optim.mini_batch_size)
    total = max(1, optim.steps * per_step)

    def factor(done: int) -> float:
        if done < optim.warmup_steps:
            return (done + 1) / optim.warmup_steps
        progress = min(1.0, (done - optim.warmup_steps) / max(1, total - optim.warmup_steps))
        if optim.lr_schedule == "linear":
            return 1.0 - progress
        if optim.lr_schedule == "cosine":
            return 0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * progress)).item())
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def verifier_options(cfg: TrainConfig) -> dict[str, object]:
    """The ``verifier`` section's named settings under each verifier's own argument names (math: time_limit,
    require_boxed, extraction; code: timeout, memory_mb, sandbox); each verifier gets those its constructor
    accepts, and ``verifier.options`` the rest."""
    v = cfg.verifier
    return {"time_limit": v.time_limit, "require_boxed": v.require_boxed, "extraction": v.extraction,
            "timeout": v.code_time_limit, "memory_mb": v.code_memory_mb, "sandbox": v.sandbox}


def max_model_len(cfg: TrainConfig) -> int:
    return cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens


def describe_plan(cfg: TrainConfig, num_prompts: int) -> str:
    """The plan printed by ``--dry-run``."""
    samples = cfg.optim.prompts_per_step * cfg.rollout.group_size
    return json.dumps({
        "model": cfg.model.path, "task": cfg.data.task, "prompts": num_prompts, "steps": cfg.optim.steps,
        "samples_per_step": samples, "optimizer_steps_per_step": cfg.optim.ppo_epochs * -(-samples // cfg.optim.mini_batch_size),
        "engine": cfg.rollout.engine, "estimator": cfg.algorithm.estimator,
        "policy_loss": cfg.algorithm.policy_loss, "loss_agg": loss_aggregation(cfg.algorithm),
        "lora": dataclasses.asdict(cfg.model.lora) if cfg.model.lora.rank else None,
        "output_dir": cfg.checkpoint.output_dir,
    }, indent=2)
