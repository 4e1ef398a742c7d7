"""Load test of a warm sandbox back-end: many programs, one in ten hostile, through one sandbox.

    .venv/bin/python -m benchmarks.sandbox_load [--backend bwrap] [--count 10000] [--workers 4]

The honest programs read numbers from stdin and print their sum (each answer is checked); the
hostile ones are the suite of ``sandboxes/_hostile.py`` in turn (bombs, floods, escapes; each run
is checked from the host side, as ``rlvr sandbox check`` does, under the suite's limits; honest
runs get a 10 s timeout, so that a slow answer on a loaded machine is not counted wrong). Reports
throughput, latency (median, 99th percentile, worst) of honest and hostile runs, escapes, and the
resident memory of the back-end's warm server and of this host process before and after.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOSTILE_SHARE = 0.1
HONEST_TIMEOUT = 10.0


def rss_kib(pids: set[int]) -> int:
    """Resident memory of ``pids`` together, in KiB (0 for processes that are gone)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def honest_program(rng: random.Random) -> tuple[str, str, str]:
    numbers = [rng.randint(-10**6, 10**6) for _ in range(rng.randint(1, 50))]
    code = "import sys\nprint(sum(int(word) for word in sys.stdin.read().split()))\n"
    return code, " ".join(map(str, numbers)), f"{sum(numbers)}\n"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="bwrap")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import sandboxes
    from sandboxes._hostile import CASES, SUITE_LIMITS, Host

    reason = sandboxes.unavailable_reason(args.backend)
    if reason:
        raise SystemExit(f"{args.backend} is unavailable here: {reason}")
    rng = random.Random(args.seed)
    hostile_every = round(1 / HOSTILE_SHARE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = sandboxes.get(args.backend, **SUITE_LIMITS)
    with Host(canary_seconds=24 * 3600) as host, box:
        box.run("pass")  # start the warm server
        server_before, host_before = rss_kib(box.resident_pids()), rss_kib({os.getpid()})
        jobs = []
        for index in range(args.count):
            if index % hostile_every == hostile_every - 1:
                case = CASES[(index // hostile_every) % len(CASES)]
                jobs.append(("hostile", case, case.source(host), "", None))
            else:
                code, stdin, expected = honest_program(rng)
                jobs.append(("honest", None, code, stdin, expected))
        latencies: dict[str, list[float]] = {"honest": [], "hostile": []}
        problems: list[str] = []
        done = 0

        def one(job):
            kind, case, code, stdin, expected = job
            result = box.run(code, stdin=stdin, timeout=HONEST_TIMEOUT if kind == "honest" else None)
            if kind == "honest":
                problem = None if (result.status, result.stdout) == ("ok", expected) else (
                    f"honest run: {result.status} {result.stdout[:80]!r} {result.stderr[-200:]!r}")
            else:
                problem = case.check(result, host)
                problem = f"{case.name}: {problem}" if problem else None
            return kind, result.wall_time, problem

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            for kind, wall_time, problem in pool.map(one, jobs):
                latencies[kind].append(wall_time)
                if problem:
                    problems.append(problem)
                done += 1
                if done % 1000 == 0 or done == len(jobs):
                    elapsed = time.perf_counter() - started
                    print(f"  {done:6d}/{len(jobs)} programs, {done / elapsed:6.1f}/s, {len(problems)} problems, "
                          f"RSS server {rss_kib(box.resident_pids()) / 1024:.1f} MiB, "
                          f"host {rss_kib({os.getpid()}) / 1024:.1f} MiB", flush=True)
        elapsed = time.perf_counter() - started
        escaped_canary = host.canary.poll() is not None
        leftovers = host.leftover_processes(box.resident_pids())
        server_after, host_after = rss_kib(box.resident_pids()), rss_kib({os.getpid()})
    print(f"{args.backend}: {args.count} programs ({len(latencies['hostile'])} hostile), {args.workers} workers, "
          f"limits {SUITE_LIMITS} (honest runs: timeout {HONEST_TIMEOUT:g} s)")
    print(f"  throughput        {args.count / elapsed:8.1f} programs/s ({elapsed:.1f} s)")
    for kind, values in latencies.items():
        print(f"  latency {kind:8}  median {statistics.median(values) * 1000:7.1f} ms   p99 "
              f"{percentile(values, 0.99) * 1000:7.1f} ms   worst {max(values) * 1000:7.1f} ms")
    print(f"  server RSS        {server_before / 1024:8.1f} MiB before, {server_after / 1024:8.1f} MiB after")
    print(f"  host process RSS  {host_before / 1024:8.1f} MiB before, {host_after / 1024:8.1f} MiB after")
    print(f"  problems          {len(problems)} (wrong honest answers or escapes); canary killed: {escaped_canary}; "
          f"leftover processes: {leftovers}")
    for problem in problems[:20]:
        print(f"    {problem}")


if __name__ == "__main__":
    main()
