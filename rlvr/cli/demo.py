from __future__ import annotations

import argparse

from rlvr.cli import command


@command("demo")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo: a tiny model learns arithmetic reasoning with RLVR on the CPU, in minutes.

    Builds a model from scratch, warm-starts it with SFT, evaluates it, trains it with DAPO, evaluates
    it again and writes DIR/report.md with the before/after table and plots. Interrupted? Run the
    same command again: finished stages are skipped and RL resumes from its last checkpoint.
      rlvr demo --out runs/demo
      rlvr demo rl.steps=20 eval.n=4          # any option, see --print-config"""
    parser.add_argument("--out", help="Directory of everything the demo writes (default: runs/demo).")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Demo options, e.g. rl.steps=20.")
    parser.add_argument("--print-config", action="store_true", help="Print every demo option with its doc and exit.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rlvr import config
    from rlvr.demo import DemoConfig, run_demo

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    demo_config = config.load(DemoConfig, None, overrides)
    if args.print_config:
        print(config.render(demo_config))
        return 0
    run_demo(demo_config)
    return 0
