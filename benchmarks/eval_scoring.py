"""Seconds `rlvr eval` spends scoring verified samples: pass@k, avg@n, maj@k (answers grouped with the math
verifier's equivalence) and the bootstrap intervals, with no model involved.

    .venv/bin/python -m benchmarks.eval_scoring [--problems 500] [--n 16] [--seed 0]

Each problem gets ``n`` extracted answers drawn (seeded) from four answer classes, each written in several
equivalent ways, some of which only SymPy can match (``2\\sqrt{2}`` and ``\\sqrt{8}``), so the equivalence
runs through the verifier's time-bounded worker processes as in a real evaluation. ks are the defaults
(powers of two up to n, and n). Reported: seconds for the whole task, split into the maj@k equivalence
grouping (first pass, verifier calls) and the rest.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import verifiers
from rlvr import evaluation

ANSWER_CLASSES = [
    ["\\frac{1}{2}", "0.5", "1/2"],
    ["2\\sqrt{2}", "\\sqrt{8}", "2 \\sqrt 2"],
    ["18", "18.0", "18"],
    ["x^2+1", "1+x^2", "x^{2} + 1"],
]


def sample_rows(problems: int, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for problem in range(problems):
        gold = rng.randrange(len(ANSWER_CLASSES))
        for sample in range(n):
            answer_class = rng.randrange(len(ANSWER_CLASSES) + 1)  # the extra class: no answer
            extracted = rng.choice(ANSWER_CLASSES[answer_class]) if answer_class < len(ANSWER_CLASSES) else None
            rows.append({
                "task": "bench", "problem_id": f"p{problem}", "sample": sample, "extracted": extracted,
                "correct": answer_class == gold, "reason": "correct" if answer_class == gold else "wrong",
                "length": 100, "finish_reason": "stop",
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = sample_rows(args.problems, args.n, args.seed)
    verifier = verifiers.get("math", **evaluation.VERIFIER_OPTIONS)
    verifier.verify("\\boxed{2\\sqrt{2}}", "\\sqrt{8}")  # start a SymPy worker outside the timing
    ks = evaluation.default_ks(args.n)

    equivalent = evaluation.answer_equivalence(verifier)
    started = time.perf_counter()
    evaluation.score_task(rows, args.n, ks, equivalent, seed=args.seed)
    first = time.perf_counter() - started
    # Same rows again with the memoised equivalence: everything but the verifier calls.
    started = time.perf_counter()
    evaluation.score_task(rows, args.n, ks, equivalent, seed=args.seed)
    cached = time.perf_counter() - started
    verifier.close()
    print(json.dumps({
        "problems": args.problems, "n": args.n, "ks": ks,
        "score_task_seconds": round(first, 2),
        "without_verifier_calls_seconds": round(cached, 2),
        "equivalence_checks": round(first - cached, 2),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
