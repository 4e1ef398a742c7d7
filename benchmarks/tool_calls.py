"""Cost of the python tool of multi-turn rollouts: starting a persistent sandboxed interpreter
(``sandboxes.repl.PythonRepl``), and one call in it, against one run of the same code in the code
verifier's warm bwrap sandbox (a fresh process per run), the peer measured in the same process.

    python -m benchmarks.tool_calls [--calls 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

CODE = "print(4467 * 8548)"


def timed(function, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def describe(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return (f"{name:<44} median {1000 * statistics.median(ordered):7.2f} ms   "
            f"p90 {1000 * ordered[int(0.9 * (len(ordered) - 1))]:7.2f} ms   ({len(ordered)} runs)")


def main() -> None:
    import sandboxes
    from sandboxes.repl import PythonRepl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="Runs of each measurement (default: 50).")
    args = parser.parse_args()

    def start_and_first_call() -> None:
        with PythonRepl() as repl:
            result = repl.run(CODE)
            if result.output != "38183916\n":
                raise RuntimeError(f"the interpreter answered {result}")

    with PythonRepl() as repl:
        repl.run("0")
        calls = timed(lambda: repl.run(CODE), args.calls)
    starts = timed(start_and_first_call, args.calls)
    with sandboxes.get("bwrap") as box:
        box.run("0")
        one_shot = timed(lambda: box.run(CODE, timeout=5), args.calls)
    print(describe("persistent interpreter: start + first call", starts))
    print(describe("persistent interpreter: one more call", calls))
    print(describe("bwrap one-shot run (code verifier's sandbox)", one_shot))
    print(f"a call in a running interpreter costs {statistics.median(calls) / statistics.median(one_shot):.3f}x a "
          f"one-shot run; starting one costs {statistics.median(starts) / statistics.median(one_shot):.2f}x")


if __name__ == "__main__":
    main()
