from __future__ import annotations

import argparse
import json

from rlvr.cli import CLIError, command


@command("tasks")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """List built-in tasks and show rendered prompts.

    rlvr tasks list
    rlvr tasks show math500 --path ../shared/data/math500.jsonl --limit 2
    rlvr tasks show arithmetic --option steps=3 --option digits=1 --template base
    rlvr tasks show jsonl --path my.jsonl --option problem_column=q --option answer_column=a"""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="Every registered task: name, kind, verifier, default source, size.")
    show = actions.add_parser("show", help="A few examples of one task as rendered prompts with their references.")
    show.add_argument("name", help="Task name (see `rlvr tasks list`), or hf:ORG/NAME[:CONFIG].")
    show.add_argument("--limit", type=int, default=3, help="How many examples to show (default 3).")
    show.add_argument("--path", help="Local data file (jsonl, json, parquet) instead of the default source.")
    show.add_argument("--split", help="Data split (default: the task's own).")
    show.add_argument("--seed", type=int, help="Shuffle with this seed before taking --limit.")
    show.add_argument("--template", default="auto", help="Prompt template: auto, base, chat, code (default auto).")
    show.add_argument("--tokenizer", help="Tokenizer directory or hub id; needed for the chat template.")
    show.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Column mapping (problem_column=q) or generator knob (steps=3); repeatable.",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import tasks

    try:
        if args.action == "list":
            return list_tasks(tasks)
        return show_task(tasks, args)
    except (tasks.TaskDataError, ValueError) as error:
        raise CLIError(str(error)) from None


def list_tasks(tasks) -> int:
    rows = [("NAME", "KIND", "VERIFIER", "SOURCE", "SIZE")]
    for name in tasks.available():
        spec = tasks.get(name)
        size = ", ".join(f"{split} {count}" for split, count in spec.sizes.items()) or "-"
        rows.append((name, spec.kind, spec.verifier, spec.source, size))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    print(
        f"\nTemplates: {', '.join(tasks.available_templates())}.  Own data: jsonl / parquet with --path, or hf:ORG/NAME."
    )
    return 0


def show_task(tasks, args: argparse.Namespace) -> int:
    options = dict(parse_option(text) for text in args.option)
    examples = tasks.load(args.name, split=args.split, path=args.path, limit=args.limit, seed=args.seed, **options)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    for example in examples:
        print(f"=== {example.id}  (verifier: {example.verifier})")
        print(tasks.render_prompt(example, tokenizer, template=args.template))
        reference = example.reference if isinstance(example.reference, str) else json.dumps(example.reference)
        print(f"--- reference: {clip(reference)}")
        if example.metadata.get("solution"):
            print(f"--- solution: {clip(str(example.metadata['solution']))}")
        print()
    return 0


def clip(text: str, length: int = 400) -> str:
    return text if len(text) <= length else text[:length] + " ..."


def parse_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE``; the value is read as JSON when it parses (3, true, "x"), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CLIError(f"--option {text!r} should look like KEY=VALUE, e.g. --option steps=3")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
