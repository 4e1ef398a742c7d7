"""How long loading a task takes: ``tasks.load`` from a local file (stdlib JSON reader, no cache)
against reading the same file through ``datasets.load_dataset("json")`` (cold: builds an arrow
cache; warm: reuses it), and the generators' rate.

    .venv/bin/python -m benchmarks.tasks_load [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import tasks

FILES = [
    ("math500", "math500.jsonl"),
    ("gsm8k", "gsm8k_train.jsonl"),
    ("math", "math_test_5000.jsonl"),
    ("mbpp", "mbpp.jsonl"),
    ("livecodebench", "livecodebench_rllm.jsonl"),
]


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    args = parser.parse_args()
    import datasets

    datasets.disable_progress_bars()
    warnings.simplefilter("ignore")
    print(f"{'task':14} {'file':28} {'rows':>6} {'tasks.load':>11} {'datasets cold':>14} {'datasets warm':>14}")
    for task, name in FILES:
        path = Path(args.data) / name
        seconds, examples = timed(lambda path=path, task=task: tasks.load(task, path=path))
        with tempfile.TemporaryDirectory() as cache:
            load = lambda path=path, cache=cache: datasets.load_dataset(  # noqa: E731
                "json", data_files=str(path), split="train", cache_dir=cache
            ).to_list()
            cold, _ = timed(load)
            warm, _ = timed(load)
        print(f"{task:14} {name:28} {len(examples):>6} {seconds:>10.3f}s {cold:>13.3f}s {warm:>13.3f}s")
    for task, knobs in [("arithmetic", {"steps": 3}), ("linear", {"both_sides": True})]:
        seconds, examples = timed(lambda task=task, knobs=knobs: tasks.load(task, limit=10_000, **knobs))
        print(f"{task:14} generated {len(examples)} examples in {seconds:.3f}s ({len(examples) / seconds:,.0f}/s)")


if __name__ == "__main__":
    main()
