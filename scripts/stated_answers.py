"""A check outside the verifier for `rlvr eval` directories of the `arithmetic` task: the share of samples
whose extracted answer ends in the gold number, so that an unevaluated expression the math verifier scores
by its value ("So your answer is 9 - 3." for 6) does not count. Prints, per directory and extraction mode,
the verifier's pass@1, the stated-answer pass@1 and its paired difference from the first directory with a
95% bootstrap interval over problems.

    python scripts/stated_answers.py runs/eval-base runs/eval-rl runs/eval-control
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import tasks
from rlvr.metrics import bootstrap_ci


def per_problem(directory: Path, suffix: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per problem id: the verifier's accuracy and the stated-answer accuracy (``suffix``: "" or "_strict")."""
    settings = json.loads((directory / "results.json").read_text())["settings"]
    examples = tasks.load("arithmetic", split=settings["split"] or "test", limit=settings["limit"], seed=settings["seed"],
                          **settings["task_options"].get("arithmetic", {}))
    gold = {example.id: example.reference for example in examples}
    verified: dict[str, list[bool]] = {}
    stated: dict[str, list[bool]] = {}
    for line in (directory / "samples.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["task"] != "arithmetic":
            continue
        correct = bool(row["correct" + suffix])
        numbers = re.findall(r"-?\d+", str(row["extracted" + suffix]))
        verified.setdefault(row["problem_id"], []).append(correct)
        stated.setdefault(row["problem_id"], []).append(correct and numbers[-1:] == [gold[row["problem_id"]]])
    return ({problem: sum(flags) / len(flags) for problem, flags in verified.items()},
            {problem: sum(flags) / len(flags) for problem, flags in stated.items()})


def main(directories: list[Path]) -> None:
    for suffix, mode in (("", "lenient"), ("_strict", "strict")):
        _, base = per_problem(directories[0], suffix)
        for directory in directories:
            verified, stated = per_problem(directory, suffix)
            common = [problem for problem in base if problem in stated]
            differences = [stated[problem] - base[problem] for problem in common]
            low, high = bootstrap_ci(differences, confidence=0.95, seed=0)
            print(f"{str(directory):<32} {mode:<8} verifier {100 * sum(verified.values()) / len(verified):5.1f}  "
                  f"stated {100 * sum(stated.values()) / len(stated):5.1f}  stated - first "
                  f"{100 * sum(differences) / len(differences):+5.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")


if __name__ == "__main__":
    main([Path(argument) for argument in sys.argv[1:]])
