"""The ``code`` verifier: runs the program in a completion against a reference's tests in a sandbox.

    checker = verifiers.get("code", sandbox="bwrap", timeout=10)
    checker.verify(completion, {"test": "def check(candidate): ...", "entry_point": "add"})

The program is the last fenced code block of the completion (or the whole text if it has none).
Its language is the fence's tag: Python (```` ```python ````, ``py``, or no tag) and C++ (``cpp``,
``c++``, ``cc``, ``cxx``; compiled once per check with g++, then run once per test), listed in
:data:`LANGUAGES`; any other tag is the verdict ``unsupported_language``, and a program that does
not compile is ``compile_error``. Function tests (HumanEval, MBPP, functional) are Python only.
References come in the formats real data sets use:

* HumanEval: ``{"test": "<defines check(candidate)>", "entry_point": name, "prompt": ...}``. If the
  program does not define ``entry_point`` it is taken as the body that continues the prompt, and
  the program run is ``prompt + completion`` (HumanEval's own convention); a program that defines
  the function runs as it is. Helpers the tests use from the prompt come from the prompt.
* MBPP: ``{"test_list": ["assert ...", ...], "test_setup_code": "..."}``.
* stdin/stdout and functional (LiveCodeBench, CodeContests): ``{"tests": [{"input", "output",
  "testtype": "stdin" | "functional"}], "fn_name": ...}``; functional inputs are newline-separated
  JSON arguments and the output one JSON value.

Reward 1 only if every test passes. The exit code is never trusted: function tests run in a harness
(``_code_harness.py``) where the candidate runs in its own process, values cross as plain
builtins, and each passing test is a nonce-stamped line that only the harness can write. Expected
stdout and functional results are compared here on the host and never enter the sandbox: stdout
exactly, up to trailing whitespace of each line, trailing blank lines and line endings.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sandboxes
from sandboxes.base import ExecResult, Sandbox
from verifiers import register
from verifiers.base import Verdict, Verifier

HARNESS = Path(__file__).with_name("_code_harness.py").read_text()
# Functional (LeetCode-style) programs use typing names without importing them; LiveCodeBench's own
# runner prepends imports the same way.
FUNCTIONAL_PRELUDE = "from typing import *\nfrom collections import *\nimport math, heapq, bisect, itertools, functools\n"
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)\s*\(", re.MULTILINE)
_FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.DOTALL)
# Fence tags the verifier accepts, by the sandbox language they run as.
LANGUAGES = {"python": ("python", "python3", "py", "py3", ""), "cpp": ("cpp", "c++", "cc", "cxx")}
_LANGUAGE_OF_TAG = {tag: language for language, tags in LANGUAGES.items() for tag in tags}


def extract_program(completion: str) -> str:
    """The last fenced code block of ``completion``, or the whole text if there is none."""
    return extract_program_and_tag(completion)[0]


def extract_program_and_tag(completion: str) -> tuple[str, str]:
    """The last fenced code block and its fence tag (lower case, "" without one); the whole text
    and "" if there is no block."""
    blocks = _FENCE.findall(completion)
    if not blocks:
        return completion, ""
    tag, program = blocks[-1]
    return program, (tag.strip().split() or [""])[0].lower()


def normalize_output(text: str) -> str:
    """Output as compared: line endings unified, trailing whitespace of lines and trailing blank lines dropped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


def _defines(program: str, name: str) -> bool:
    # one compiled pattern for every name (a pattern per entry point missed re's cache on each new task)
    return any(match.group(1) == name for match in _DEF.finditer(program))


def _decode(data: Any) -> Any:
    """Host-side twin of the harness decoder: strict tagged values to plain JSON-like values."""
    tag, *rest = data
    if tag == "none":
        return None
    if tag in ("bool", "str") and isinstance(rest[0], (bool, str)):
        return rest[0]
    if tag == "int":
        return int(rest[0])
    if tag == "float":
        return float(rest[0])
    if tag in ("list", "tuple"):
        return [_decode(item) for item in rest[0]]
    if tag == "dict":
        return {_json_key(_decode(k)): _decode(v) for k, v in rest[0]}
    raise ValueError(f"a {tag} cannot equal a JSON value")


def _json_key(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(key)


@register("code")
class CodeVerifier(Verifier):
    """Runs a completion's program against HumanEval / MBPP / stdin / functional tests in a sandbox."""

    languages = tuple(LANGUAGES)

    def __init__(self, sandbox: Sandbox | str = "auto", timeout: float = 10.0, memory_mb: int = 512,
                 workers: int = 2, **sandbox_options: Any):
        self.sandbox = sandboxes.get(sandbox, **sandbox_options) if isinstance(sandbox, str) else sandbox
        self.sandbox.precompile(HARNESS)
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.workers = workers

    def verify(self, completion: str, reference: Any) -> Verdict:
        program, tag = extract_program_and_tag(completion)
        if isinstance(reference, str):
            reference = json.loads(reference)
        if not program.strip():
            return Verdict(0.0, False, program, "no code", {"passed": 0, "total": _count_tests(reference)})
        language = _LANGUAGE_OF_TAG.get(tag)
        function_tests = "entry_point" in reference or "test_list" in reference or any(
            isinstance(test, dict) and test.get("testtype") == "functional" for test in _io_tests(reference))
        accepted = ["python"] if function_tests else list(LANGUAGES)
        if language not in accepted:
            return Verdict(0.0, False, program, "unsupported_language", {
                "passed": 0, "total": _count_tests(reference), "language": tag,
                "accepted": [f"```{tags[0]}" for name, tags in LANGUAGES.items() if name in accepted]})
        if "entry_point" in reference:
            if not _defines(program, reference["entry_point"]) and reference.get("prompt"):
                program = reference["prompt"] + program
            spec = {"kind": "humaneval", "test": reference["test"], "entry_point": reference["entry_point"],
                    "prompt": reference.get("prompt")}
            return self._run_harness(program, spec, total=1)
        if "test_list" in reference:
            tests = list(reference["test_list"])
            spec = {"kind": "mbpp", "tests": tests, "setup": reference.get("test_setup_code", "")}
            return self._run_harness(program, spec, total=len(tests))
        if "tests" in reference:
            return self._run_io_tests(program, reference, language)
        raise ValueError(
            "code reference must hold HumanEval's 'test'+'entry_point', MBPP's 'test_list', or 'tests' "
            f"(stdin/functional); got keys {sorted(reference)}"
        )

    def verify_batch(self, completions: Sequence[str], references: Sequence[Any],
                     workers: int | None = None) -> list[Verdict]:
        """Verdicts in input order, ``workers`` (default: the verifier's) sandbox runs at a time."""
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        with ThreadPoolExecutor(max_workers=workers or self.workers) as pool:
            return list(pool.map(self.verify, completions, references))

    # --- function tests through the harness

    def _run_harness(self, program: str, spec: dict[str, Any], total: int) -> Verdict:
        nonce = secrets.token_hex(16)
        result = self.sandbox.run(HARNESS, stdin=json.dumps({**spec, "nonce": nonce}), files={"solution.py": program},
                                  timeout=self.timeout, memory_mb=self.memory_mb)
        passed, failures, _ = _parse_report(result.stdout, nonce)
        done = f"{nonce} done" in result.stdout.splitlines()
        return self._verdict(program, result, total, passed, failures, done)

    def _verdict(self, program: str, result: ExecResult, total: int, passed: set[int],
                 failures: dict[int, str], done: bool) -> Verdict:
        details: dict[str, Any] = {"passed": len(passed), "total": total, "status": result.status}
        correct = done and passed == set(range(total))
        if correct:
            return Verdict(1.0, True, program, "correct", details)
        first = min(set(range(total)) - passed, default=None)
        details["first_failure"] = {"test": first, "error": failures.get(first) or result.stderr[-1000:]}
        reason = "wrong" if result.status == "ok" or (result.status == "error" and failures) else result.status
        return Verdict(0.0, False, program, reason, details)

    # --- stdin/stdout and functional tests, compared on the host

    def _run_io_tests(self, program: str, reference: dict[str, Any], language: str) -> Verdict:
        tests = _io_tests(reference)
        total = len(tests)
        functional = [i for i, test in enumerate(tests) if test.get("testtype") == "functional"]
        passed: set[int] = set()
        if functional:
            if not reference.get("fn_name"):
                raise ValueError("functional tests need 'fn_name' in the reference")
            inputs = [[json.loads(line) for line in tests[i]["input"].splitlines() if line.strip()] for i in functional]
            nonce = secrets.token_hex(16)
            spec = {"kind": "functional", "fn_name": reference["fn_name"], "nonce": nonce,
                    "inputs": [_encode_plain(arguments) for arguments in inputs]}
            result = self.sandbox.run(HARNESS, stdin=json.dumps(spec), files={"solution.py": FUNCTIONAL_PRELUDE + program},
                                      timeout=self.timeout, memory_mb=self.memory_mb)
            _, failures, values = _parse_report(result.stdout, nonce)
            for position, index in enumerate(functional):
                if position in values and _functional_equal(values[position], tests[index]["output"]):
                    passed.add(index)
                elif position not in failures:
                    failures[position] = "wrong answer" if position in values else "no result"
            if len(passed) < len(functional):
                first = min(set(functional) - passed)
                return self._io_verdict(program, result, total, passed, first,
                                        failures.get(functional.index(first), "wrong answer"))
        stdin_tests = [index for index in range(total) if index not in functional]
        # One session for all stdin tests: compiled once (C++), each test its own process.
        session = self.sandbox.session(program, language=language) if stdin_tests else None
        if session is not None and not session.compiled:
            result = session.compile_result
            return Verdict(0.0, False, program, result.status, {
                "passed": len(passed), "total": total, "status": result.status,
                "first_failure": {"test": stdin_tests[0], "error": result.stderr[-1000:]}})
        for index in stdin_tests:
            test = tests[index]
            result = session.run(test["input"], timeout=self.timeout, memory_mb=self.memory_mb)
            if result.status == "ok" and normalize_output(result.stdout) == normalize_output(test["output"]):
                passed.add(index)
                continue
            error = "wrong answer" if result.status == "ok" else result.stderr[-1000:]
            return self._io_verdict(program, result, total, passed, index, error)
        return Verdict(1.0, True, program, "correct", {"passed": total, "total": total})

    def _io_verdict(self, program: str, result: ExecResult, total: int, passed: set[int], first: int,
                    error: str) -> Verdict:
        reason = "wrong" if result.status == "ok" else result.status
        details = {"passed": len(passed), "total": total, "status": result.status,
                   "first_failure": {"test": first, "error": error}}
        return Verdict(0.0, False, program, reason, details)


def _io_tests(reference: dict[str, Any]) -> list[dict[str, Any]]:
    tests = reference.get("tests") or []
    return json.loads(tests) if isinstance(tests, str) else tests


def _count_tests(reference: Any) -> int:
    if "entry_point" in reference:
        return 1
    return len(reference.get("test_list") or reference.get("tests") or [])


def _parse_report(stdout: str, nonce: str) -> tuple[set[int], dict[int, str], dict[int, Any]]:
    """The harness's nonce-stamped lines: passed test indices, failures, functional results."""
    passed: set[int] = set()
    failures: dict[int, str] = {}
    values: dict[int, Any] = {}
    for line in stdout.splitlines():
        stamp, _, rest = line.partition(" ")
        if stamp != nonce:
            continue
        kind, _, rest = rest.partition(" ")
        index_text, _, payload = rest.partition(" ")
        if not index_text.isdigit():
            continue
        index = int(index_text)
        if kind == "pass":
            passed.add(index)
        elif kind == "fail":
            failures[index] = json.loads(payload)
        elif kind == "result":
            values[index] = json.loads(payload)
    return passed, failures, values


def _encode_plain(value: Any) -> list:
    """JSON arguments in the harness's tagged encoding."""
    if value is None:
        return ["none"]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", repr(value)]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, list):
        return ["list", [_encode_plain(item) for item in value]]
    if isinstance(value, dict):
        return ["dict", [[_encode_plain(k), _encode_plain(v)] for k, v in value.items()]]
    raise TypeError(f"cannot encode {type(value).__name__}")


def _functional_equal(tagged: Any, expected_json: str) -> bool:
    try:
        return _decode(tagged) == json.loads(expected_json)
    except (ValueError, TypeError, IndexError):
        return False
