from __future__ import annotations

import argparse

from rlvr.cli import CLIError, command


@command("sft")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Supervised fine-tuning on worked solutions (the warm start before RL).

    The loss is on the target tokens only; the prompt is the task's template, as RL and eval render it.
    Options come from a YAML file (--config) and `section.key=value` overrides, e.g.
      rlvr sft model.path=runs/tiny data.task=jsonl data.path=train.jsonl optim.lr=1e-3 output.dir=runs/base
    `rlvr sft --print-config` lists every option with its default and doc."""
    parser.add_argument("--config", help="YAML config file.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Config overrides, e.g. optim.lr=1e-5.")
    parser.add_argument("--print-config", action="store_true", help="Print the resolved config with docs and exit.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rlvr import config
    from rlvr.sft import SFTConfig, check_config

    sft_config = config.load(SFTConfig, args.config, args.overrides)
    if args.print_config:
        print(config.render(sft_config))
        return 0
    check_config(sft_config)
    from rlvr.models import ModelFetchError
    from rlvr.models.gguf_import import GGUFImportError
    from rlvr.policy import ModelNotFoundError
    from rlvr.sft import train
    from tasks import TaskDataError

    try:
        train(sft_config)
    except (ModelNotFoundError, ModelFetchError, GGUFImportError, TaskDataError) as error:
        raise CLIError(str(error)) from None
    return 0
