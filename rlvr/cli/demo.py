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
      rlvr demo rl.steps=20 eval.n=4          # any option, see --print-config

    With --model, a real pretrained model instead, through a recipe of configs/ and its random-reward
    control (evaluate, train, evaluate, train the control, evaluate, report):
      rlvr demo --model smollm2-135m-instruct --out runs/demo-smollm2"""
    parser.add_argument("--out", help="Directory of everything the demo writes (default: runs/demo).")
    parser.add_argument("--model", help="Named model or model directory: run the real-model demo with its control.")
    parser.add_argument("--tools", action="store_true",
                        help="The tool-use demo: GRPO with the sandboxed Python tool on a tiny model warm-started to call it (rlvr.tool_demo).")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Demo options, e.g. rl.steps=20.")
    parser.add_argument("--print-config", action="store_true", help="Print every demo option with its doc and exit.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rlvr import config
    from rlvr.demo import DemoConfig, ModelDemoConfig, run_demo, run_model_demo

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    if args.tools:
        from rlvr.tool_demo import ToolDemoConfig, run_tool_demo

        tool_config = config.load(ToolDemoConfig, None, overrides)
        if args.print_config:
            print(config.render(tool_config))
        else:
            run_tool_demo(tool_config)
        return 0
    if args.model:
        overrides.append(f"model={args.model}")
    demo_config = config.load(ModelDemoConfig if args.model else DemoConfig, None, overrides)
    if args.print_config:
        print(config.render(demo_config))
        return 0
    (run_model_demo if args.model else run_demo)(demo_config)
    return 0
