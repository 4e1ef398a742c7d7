"""Throughput and latency of the math verifier on 5,000 realistic completions, side by side with
plain ``math_verify.verify`` in one process.

    .venv/bin/python -m benchmarks.verify_math [--rows 5000] [--workers 2]

Completions are built from the gold answers of ../shared/data/math500.jsonl and gsm8k_test.jsonl:
half state the right answer, half a wrong one (another problem's answer), in the styles models
use (boxed, "The answer is", "####", a <think> block)."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
STYLES = [
    "Let me compute step by step. Combining the terms gives the result.\nSo the answer is $\\boxed{{{a}}}$.",
    "<think>Try small cases first, then generalise.</think>\nThe final answer is \\boxed{{{a}}}.",
    "We simplify and find the value.\nThe answer is {a}.",
    "Step 1: set up the equation. Step 2: solve it.\n#### {a}",
]


def build_rows(count: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    """``count`` (completion, reference, is_right) rows, half right and half wrong."""
    rng = random.Random(seed)
    math500 = [json.loads(line)["answer"] for line in (SHARED / "math500.jsonl").open()]
    gsm8k = [json.loads(line)["answer"] for line in (SHARED / "gsm8k_test.jsonl").open()]
    rows = []
    for index in range(count):
        pool = math500 if index % 2 else gsm8k
        gold = rng.choice(pool)
        right = index % 4 < 2
        answer = gold if right else rng.choice(pool)
        style = STYLES[index % len(STYLES)] if pool is gsm8k else STYLES[index % 2]
        rows.append((style.format(a=answer), gold, right or answer == gold))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = build_rows(args.rows)
    completions, references = [r[0] for r in rows], [r[1] for r in rows]

    import verifiers

    checker = verifiers.get("math")
    checker.verify_batch(completions[:50], references[:50], args.workers)  # start the workers
    started = time.perf_counter()
    verdicts = checker.verify_batch(completions, references, args.workers)
    seconds = time.perf_counter() - started
    latencies = []
    for completion, reference in zip(completions[:1000], references[:1000], strict=True):
        one = time.perf_counter()
        checker.verify(completion, reference)
        latencies.append(time.perf_counter() - one)
    stats = verifiers.BatchStats.of(verdicts)
    checker.close()
    print(
        f"rlvr math verifier, {args.workers} workers: {len(rows)} rows in {seconds:.1f} s = {len(rows) / seconds:.0f} verifications/s; "
        f"single-call latency p50 {1000 * statistics.median(latencies):.1f} ms, "
        f"p99 {1000 * statistics.quantiles(latencies, n=100)[98]:.1f} ms (first 1000 rows, one at a time)"
    )
    print(f"  reasons {stats.reasons}; label agreement {sum(v.correct == r[2] for v, r in zip(verdicts, rows, strict=True))}/{len(rows)}")

    import math_verify

    latencies = []
    agree = 0
    started = time.perf_counter()
    for completion, reference, right in rows:
        one = time.perf_counter()
        correct = math_verify.verify(math_verify.parse(f"${reference}$"), math_verify.parse(completion))
        latencies.append(time.perf_counter() - one)
        agree += correct == right
    seconds = time.perf_counter() - started
    print(
        f"plain math_verify.parse+verify, 1 process: {len(rows)} rows in {seconds:.1f} s = {len(rows) / seconds:.0f} verifications/s; "
        f"latency p50 {1000 * statistics.median(latencies):.1f} ms, p99 {1000 * statistics.quantiles(latencies, n=100)[98]:.1f} ms"
    )
    print(f"  label agreement {agree}/{len(rows)}")


if __name__ == "__main__":
    main()
