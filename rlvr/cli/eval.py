from __future__ import annotations

import argparse
import sys

import tasks
from rlvr.cli import CLIError, command


@command("eval")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Evaluate a model: pass@k, avg@n and maj@k with confidence intervals.

    Samples --n completions per problem, checks them with the task's verifier (math: the last boxed
    answer counts, as published evaluations do) and writes DIR/results.json, DIR/samples.jsonl and,
    with matplotlib installed, DIR/pass_at_k.png. Re-running with the same --output resumes.
      rlvr eval --model PATH --tasks aime24,math500 --n 16 --k 1,4,16 --temperature 0.6 \\
          --top-p 0.95 --max-tokens 32768 --output runs/eval-aime
      rlvr eval --compare runs/eval-base runs/eval-trained"""
    parser.add_argument(
        "--model", help="Local Hugging Face model directory (e.g. a checkpoint of `rlvr train`), hub id, or named "
        "model (`rlvr model list`); or a LoRA adapter directory (a checkpoint of a LoRA run, any peft adapter), "
        "evaluated as its base model with the adapter merged in (cached under --model-cache-dir)."
    )
    parser.add_argument("--model-cache-dir", help="Where named models are cached (default: ~/.cache/rlvr/models).")
    parser.add_argument("--tasks", help="Comma-separated task names, e.g. aime24,math500 (see `rlvr tasks list`).")
    parser.add_argument(
        "--data-path",
        action="append",
        metavar="[TASK=]FILE",
        help="Local data file instead of the task's default source; with several tasks give TASK=FILE, repeatable.",
    )
    parser.add_argument("--split", help="Data split (default: the task's test split when it has one).")
    parser.add_argument("--limit", type=int, help="Evaluate only the first N problems of each task.")
    parser.add_argument(
        "--option",
        action="append",
        metavar="[TASK.]KEY=VALUE",
        help="Task option (generator knob, column name of your file), as training's data.options; the value is "
        "read as YAML; TASK. gives it to one task only (arithmetic.steps=1), else every task gets it. Repeatable.",
    )
    parser.add_argument("--n", type=int, default=1, help="Samples per problem (default: 1).")
    parser.add_argument("--k", help="Comma-separated k for pass@k and maj@k (default: powers of 2 up to n, and n).")
    parser.add_argument("--temperature", type=float, default=0.6, help="Sampling temperature (default: 0.6).")
    parser.add_argument("--top-p", type=float, default=0.95, help="Nucleus sampling threshold (default: 0.95).")
    parser.add_argument("--max-tokens", type=int, default=32768, help="Longest response in tokens (default: 32768).")
    parser.add_argument("--template", default="auto", help="Prompt template: auto (chat for a tokenizer with a chat template, else "
                        f"base) or one of {', '.join(t for t in tasks.available_templates() if t != 'auto')} (default: auto).")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (default: 0).")
    parser.add_argument("--output", help="Output directory; re-running with the same one skips finished problems.")
    parser.add_argument("--engine", choices=("vllm", "hf"), help="Sampling engine (default: vllm when installed).")
    parser.add_argument("--dtype", default="auto", help="Model dtype: auto, float32, bfloat16, float16.")
    parser.add_argument(
        "--gpu-memory-utilization",
        type=float,
        help="vLLM: fraction of GPU memory (host RAM on CPU) to use (default: 0.85 with a GPU, else 0.2).",
    )
    parser.add_argument(
        "--problems-per-batch", type=int, default=32, help="Problems sampled and saved together (default: 32)."
    )
    parser.add_argument("--tools", default="none", help="Tool the model may call while it answers: none or python "
                        "(a persistent sandboxed interpreter per sample; pair it with a template that tells the model, e.g. --template tool).")
    parser.add_argument("--tool-format", default="tags", help="With --tools: how a call is written, tags (<code>...</code>, "
                        "template tool) or fence (a ```python block, template tool-fence) (default: tags).")
    parser.add_argument("--max-tool-calls", type=int, default=4, help="With --tools: most calls per sample (default: 4).")
    parser.add_argument("--tool-time-limit", type=float, default=5.0, help="With --tools: seconds per call (default: 5).")
    parser.add_argument("--max-observation-tokens", type=int, default=128,
                        help="With --tools: tokens of one call's output kept in the sample (default: 128).")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("DIR_A", "DIR_B"),
        help="Instead of evaluating: compare two output directories, with the 95%% interval of each difference.",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rlvr import evaluation

    try:
        if args.compare:
            return _compare(evaluation, *args.compare)
        return _evaluate(evaluation, args)
    except evaluation.EvaluationError as error:
        raise CLIError(str(error)) from None


def _evaluate(evaluation, args: argparse.Namespace) -> int:
    missing = [flag for flag, value in (("--model", args.model), ("--tasks", args.tasks), ("--output", args.output))
               if not value]  # fmt: skip
    if missing:
        raise CLIError(f"give {', '.join(missing)} (or --compare DIR_A DIR_B to compare two evaluations)")
    task_names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    ks = _parse_ks(args.k) if args.k else None
    engine_options: dict[str, object] = {"dtype": args.dtype}
    engine_options["gpu_memory_utilization"] = args.gpu_memory_utilization or _default_memory_fraction()
    results = evaluation.evaluate(
        args.model,
        task_names,
        n=args.n,
        ks=ks,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        template=args.template,
        seed=args.seed,
        limit=args.limit,
        data_path=_parse_data_paths(args.data_path),
        split=args.split,
        output_dir=args.output,
        engine=args.engine,
        engine_options=engine_options,
        problems_per_batch=args.problems_per_batch,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
        task_options=_parse_task_options(args.option, task_names),
        model_cache_dir=args.model_cache_dir,
        tools=_tools_config(args),
    )
    print(evaluation.format_summary(results))
    print(f"\nwrote {args.output}/{evaluation.RESULTS_FILE} and {args.output}/{evaluation.SAMPLES_FILE}")
    return 0


def _tools_config(args: argparse.Namespace):
    from rlvr.config import ConfigError, validate
    from rlvr.train_config import ToolsConfig

    tools = ToolsConfig(name=args.tools, format=args.tool_format, max_tool_calls=args.max_tool_calls,
                        time_limit=args.tool_time_limit, max_observation_tokens=args.max_observation_tokens)
    try:
        validate(tools, "--tools ")
    except ConfigError as error:
        raise CLIError(str(error)) from None
    return None if tools.name == "none" else tools


def _compare(evaluation, directory_a: str, directory_b: str) -> int:
    rows = evaluation.compare(evaluation.load_results(directory_a), evaluation.load_results(directory_b))
    if not rows:
        raise CLIError(f"{directory_a} and {directory_b} have no task in common; nothing to compare")
    print(evaluation.format_comparison(rows, directory_a, directory_b))
    return 0


def _parse_ks(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CLIError(f"--k must be comma-separated integers like 1,4,16, not {text!r}") from None


def _parse_data_paths(values: list[str] | None) -> str | dict[str, str] | None:
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    paths = {}
    for value in values:
        task, separator, path = value.partition("=")
        if not separator or not task or not path:
            raise CLIError(f"with several --data-path give each as TASK=FILE, not {value!r}")
        paths[task] = path
    return paths


def _parse_task_options(values: list[str] | None, task_names: list[str]) -> dict[str, dict[str, object]]:
    """``["steps=1", "gsm8k.problem_column=q"]`` -> every task's options, by task name."""
    from rlvr.config import ConfigError, parse_override

    options: dict[str, dict[str, object]] = {task: {} for task in task_names}
    for value in values or ():
        try:
            key, parsed = parse_override(value)
        except ConfigError:
            raise CLIError(f"--option must be KEY=VALUE or TASK.KEY=VALUE, not {value!r}") from None
        task, dot, name = key.partition(".")
        if not dot:
            for task_options in options.values():
                task_options[key] = parsed
        elif task in options and name:
            options[task][name] = parsed
        else:
            raise CLIError(f"--option {value!r} names task {task!r}, which is not in --tasks {','.join(task_names)}")
    return {task: task_options for task, task_options in options.items() if task_options}


def _default_memory_fraction() -> float:
    import torch

    # On the CPU backend vLLM takes this fraction of host RAM for its KV cache; large values fail to start.
    return 0.85 if torch.cuda.is_available() else 0.2
