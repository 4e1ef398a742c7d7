"""Peak memory and seconds per step of LoRA vs full fine-tuning: the same rlvr run, only the trained parameters differ.

    .venv/bin/python -m benchmarks.lora_memory [--model smollm2-135m-instruct] [--engine hf] [--variants full,lora]
        [--rank 16] [--kl-coef 0.001] [--steps 3] [--warmup 1] [--prompts-per-step 2] [--group-size 4] [--tokens 48]

The work is that of :mod:`benchmarks.train_step` (its rlvr side): the same model, edited so that every
completion is exactly ``--tokens`` long, the same arithmetic prompts and parity reward, GRPO with one optimizer
step per batch, float32 on the CPU. On top, both variants run with a KL penalty against the reference policy
(``--kl-coef``, default on): full fine-tuning loads a second copy of the model as the reference, LoRA uses the
policy with its adapter off, which is half of what LoRA saves; the other half is AdamW's state and the gradients,
kept for the adapter only. ``--kl-coef 0`` compares without a reference.

- ``full``: every parameter trains;
- ``lora``: ``model.lora.rank=--rank`` on all linear layers (alpha 32), synced to the engine merged into its
  weights (``model.lora.sync=merge``);
- ``lora-adapter``: the same, synced as a vLLM LoRA adapter (``--engine vllm`` only).

Each variant runs in its own subprocess; its peak resident memory is the process's ``VmHWM`` (trainer, engine,
optimizer, everything). Reported per variant: the median of ``time/step`` (and of its generate, train and
weight-sync parts) over the steps after ``--warmup``, the peak RSS, the trainable parameter count and the size
of the final checkpoint on disk (LoRA: the adapter, plus the merged model written at the end, counted apart).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.train_step import Setup, build_model, peak_rss_mb, register_plugins, run_rlvr, run_worker

VARIANTS = ("full", "lora", "lora-adapter")


def variant_overrides(variant: str, rank: int, kl_coef: float) -> tuple[str, ...]:
    common = (f"algorithm.kl_coef={kl_coef}",)
    if variant == "full":
        return common
    sync = "adapter" if variant == "lora-adapter" else "merge"
    return (*common, f"model.lora.rank={rank}", "model.lora.alpha=32", f"model.lora.sync={sync}")


def directory_mb(path: Path, skip: str = "") -> float:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and skip not in file.parts) / 2**20


def worker(variant: str, engine: str, model_dir: Path, setup: Setup, work: Path, rank: int, kl_coef: float) -> None:
    import torch

    from rlvr import checkpoint, lora

    if setup.threads:
        torch.set_num_threads(setup.threads)
    register_plugins()
    result = run_rlvr(model_dir, engine, setup, work, variant_overrides(variant, rank, kl_coef), name=variant)
    result["peak_rss_mb"] = peak_rss_mb()
    final = checkpoint.latest(work / variant)
    result["checkpoint_mb"] = directory_mb(final, skip=lora.MERGED_DIR)
    result["merged_mb"] = directory_mb(final / lora.MERGED_DIR) if (final / lora.MERGED_DIR).is_dir() else 0.0
    result["trainable_parameters"] = trainable_count(final)
    print("RESULT " + json.dumps(result), flush=True)


def trainable_count(final: Path) -> int:
    """Parameters the run trained: the adapter's tensors in a LoRA checkpoint, else every tensor of the model."""
    from safetensors import safe_open

    from rlvr import lora

    weights = final / lora.ADAPTER_WEIGHTS if (final / lora.ADAPTER_WEIGHTS).is_file() else final / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def launch(variant: str, engine: str, model_dir: Path, setup: Setup, work: Path, rank: int, kl_coef: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.lora_memory", "--worker", variant, "--engine", engine,
               "--model-dir", str(model_dir), "--work", str(work), "--setup", json.dumps(dataclasses.asdict(setup)),
               "--rank", str(rank), "--kl-coef", str(kl_coef)]
    return run_worker(command, work / f"{variant}.log")


def median_after(values: list[float], warmup: int) -> float:
    timed = values[warmup:]
    if not timed:
        raise ValueError(f"no step left after {warmup} warm-up steps: raise --steps")
    return statistics.median(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="full,lora", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--engine", default="hf", help="rollout engine of every variant: hf or vllm")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--kl-coef", type=float, default=0.001, help="KL penalty weight (0: no reference policy)")
    defaults = Setup(model="smollm2-135m-instruct", steps=3, warmup=1, prompts_per_step=2, group_size=4, tokens=48,
                     micro_batch_size=8)
    for field in dataclasses.fields(Setup):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.engine, args.model_dir, Setup(**json.loads(args.setup)), args.work, args.rank, args.kl_coef)
        return

    setup = Setup(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Setup)})
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or ("lora-adapter" in variants and args.engine != "vllm"):
        parser.error(f"variants are {', '.join(VARIANTS)} (lora-adapter with --engine vllm only); got {args.variants}")
    print(f"setup: {json.dumps(dataclasses.asdict(setup))}, engine {args.engine}, rank {args.rank}, kl_coef "
          f"{args.kl_coef}; load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rlvr-lora-memory-") as tmp:
        work = Path(tmp)
        model_dir = build_model(work / "model", setup)
        for variant in variants:
            started = time.monotonic()
            result = launch(variant, args.engine, model_dir, setup, work, args.rank, args.kl_coef)
            if "error" in result:
                print(f"{variant}: FAILED, {result['error']}", flush=True)
                continue
            results[variant] = result
            steps = ", ".join(f"{s:.2f}" for s in result["step_seconds"])
            print(f"{variant}: steps [{steps}] s, mean completion length {result['mean_length']:.1f}, peak RSS "
                  f"{result['peak_rss_mb']:.0f} MiB, wall {time.monotonic() - started:.0f} s", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    full = results.get("full")
    print(f"{'variant':<14}{'trainable':>12}{'peak RSS MiB':>14}{'RSS/full':>10}{'s/step':>9}{'gen s':>8}{'train s':>9}"
          f"{'sync s':>9}{'step/full':>11}{'ckpt MiB':>10}{'merged MiB':>12}")
    for variant, result in results.items():
        step = median_after(result["step_seconds"], setup.warmup)
        memory_ratio = f"{result['peak_rss_mb'] / full['peak_rss_mb']:.2f}" if full else ""
        time_ratio = f"{step / median_after(full['step_seconds'], setup.warmup):.2f}" if full else ""
        print(f"{variant:<14}{result['trainable_parameters']:>12,}{result['peak_rss_mb']:>14.0f}{memory_ratio:>10}"
              f"{step:>9.2f}{median_after(result['generate_seconds'], setup.warmup):>8.2f}"
              f"{median_after(result['train_seconds'], setup.warmup):>9.2f}"
              f"{median_after(result['sync_seconds'], setup.warmup):>9.3f}{time_ratio:>11}"
              f"{result['checkpoint_mb']:>10.1f}{result['merged_mb']:>12.1f}")


if __name__ == "__main__":
    main()
