from __future__ import annotations

import argparse

from rlvr.cli import CLIError, command


@command("train")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Train a policy with GRPO/DAPO on verifiable rewards.

    Options come from a YAML file (--config) and `section.key=value` overrides, e.g.
      rlvr train --config configs/gsm8k_grpo.yaml optim.lr=1e-6 rollout.group_size=8
    `rlvr train --print-config` lists every option with its default and doc.
    Data-parallel on this machine: `rlvr train --nproc 2 ...`; across machines, torchrun
    (`torchrun --nnodes M --nproc_per_node N ... -m rlvr train ...`, see docs/distributed.md)."""
    parser.add_argument("--config", help="YAML config file (see configs/).")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Config overrides, e.g. optim.lr=1e-6.")
    parser.add_argument("--print-config", action="store_true", help="Print the resolved config with docs and exit.")
    parser.add_argument("--dry-run", action="store_true", help="Validate config, data and model, print the plan, exit.")
    parser.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in output_dir.")
    parser.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="Train data-parallel on N processes of this machine (torchrun --standalone; FSDP2).")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rlvr import config, preflight
    from rlvr.train_config import TrainConfig

    train_config = config.load(TrainConfig, args.config, args.overrides)
    if args.print_config:
        print(config.render(train_config))
        return 0
    if args.nproc < 1:
        raise CLIError(f"--nproc must be at least 1, got {args.nproc}")
    preflight.check(train_config)
    if args.dry_run:
        from transformers import AutoTokenizer

        from rlvr.models import resolve_model_path
        from rlvr.trainer import build_prompts, describe_plan

        # The weights are not needed; a named model was fetched by the checks above, this is a lookup.
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(train_config.model.path, train_config.model.cache_dir))
        print(describe_plan(train_config, len(build_prompts(train_config, tokenizer))))
        print("dry run: config, model, data and verifiers are valid")
        return 0
    if args.nproc > 1:
        from rlvr.distributed import launch_local

        return launch_local(args.nproc, ["train", *(["--config", args.config] if args.config else []), *args.overrides,
                                         *(["--resume"] if args.resume else [])])
    from rlvr.trainer import train

    final = train(train_config, resume=args.resume)
    print(f"done: final checkpoint {final}")
    return 0
