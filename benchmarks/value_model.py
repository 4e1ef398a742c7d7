"""What PPO's value model costs per training step: the same run with ``algorithm.estimator=gae`` (a value model:
one more forward for the values, then its own backward and optimizer step) against ``grpo``, steps taken in
turns so that both see the same machine load.

    .venv/bin/python -m benchmarks.value_model [--steps 4] [--hidden 256] [--layers 4] [--prompts 8] [--group-size 4]

A tiny Qwen2 model (rlvr.tiny) of the given width and depth, the arithmetic generator, the hf engine, 32 new
tokens, one torch thread. Reported: median seconds of ``time/train`` (the updates: for gae the value model's,
then the policy's) and of ``time/step`` (also sampling, verification and the value model's forward for the
advantages) per estimator over the steps after the first, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from rlvr import config
from rlvr.tiny import TinyModelSpec, build_tiny_model
from rlvr.tracking import read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import train


def run(model: Path, output_dir: Path, estimator: str, steps: int, prompts: int, group_size: int, resume: bool) -> None:
    overrides = [
        f"model.path={model}", f"checkpoint.output_dir={output_dir}", "rollout.engine=hf", "data.task=arithmetic",
        "data.template=base", f"rollout.group_size={group_size}", "rollout.max_new_tokens=32",
        f"optim.prompts_per_step={prompts}", f"optim.mini_batch_size={prompts * group_size}", "optim.micro_batch_size=8",
        f"optim.steps={steps}", "optim.lr=1e-4", "checkpoint.every=1", "checkpoint.keep_last=1", "verifier.workers=1",
        "model.cpu_threads=1", "algorithm.dynamic_sampling=false", f"algorithm.estimator={estimator}",
    ]
    train(config.load(TrainConfig, None, overrides), resume=resume)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_tiny_model(root / "model", TinyModelSpec(hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                                                               num_layers=args.layers))
        for step in range(1, args.steps + 1):  # one step of each in turn: the same load for both
            for estimator in ("grpo", "gae"):
                run(model, root / estimator, estimator, step, args.prompts, args.group_size, resume=step > 1)
        result: dict[str, float | int] = {"steps_timed": args.steps - 1}
        for estimator in ("grpo", "gae"):
            rows = read_metrics(root / estimator)[1:]
            for key in ("time/train", "time/step"):
                result[f"{estimator} {key} median s"] = round(statistics.median(row[key] for row in rows), 3)
        for key in ("time/train", "time/step"):
            result[f"gae/grpo {key}"] = round(result[f"gae {key} median s"] / result[f"grpo {key} median s"], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
