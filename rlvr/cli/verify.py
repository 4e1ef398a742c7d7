from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlvr.cli import CLIError, command


@command("verify")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Check answers with a verifier (one answer, a file, or an audit against labels).

      rlvr verify math --completion 'so \\boxed{1/2}' --reference 0.5
      rlvr verify math --input rows.jsonl --output verdicts.jsonl    (rows: completion, reference)
      rlvr verify math --audit labelled.jsonl                        (rows also carry expected: 0/1)
      rlvr verify math --audit labelled.jsonl --against math-verify  (also list where Math-Verify differs)
    Verifier options go in as --option NAME=VALUE (e.g. --option require_boxed=true)."""
    parser.add_argument("verifier", help="Registered verifier name, e.g. math.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--completion", help="One completion to check (with --reference).")
    source.add_argument("--input", type=Path, help="JSON lines with `completion` and `reference`.")
    source.add_argument("--audit", type=Path, help="JSON lines with `completion`, `reference` and a label `expected`.")
    parser.add_argument("--reference", help="The gold answer for --completion.")
    parser.add_argument(
        "--against",
        choices=sorted(OTHER_GRADERS),
        help="With --audit: grade every row with this grader too and list each row where its verdict and ours differ.",
    )
    parser.add_argument("--output", type=Path, help="With --input: write one verdict per row here (JSON lines).")
    parser.add_argument("--workers", type=int, default=None, help="Parallel verifications (default: one per CPU).")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="A verifier option.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import verifiers

    try:
        checker = verifiers.get(args.verifier, **_options(args.option))
    except (TypeError, ValueError) as error:
        raise CLIError(f"bad option for verifier {args.verifier!r}: {error}") from None
    if args.completion is not None:
        if args.reference is None:
            raise CLIError("--completion needs --reference ANSWER")
        print(json.dumps(asdict(checker.verify(args.completion, args.reference)), ensure_ascii=False))
        return 0
    if args.against and not args.audit:
        raise CLIError("--against compares verdicts on an --audit file; give --audit FILE")
    path = args.input or args.audit
    rows = _read_rows(path, need_label=args.audit is not None)
    started = time.perf_counter()
    verdicts = checker.verify_batch([r["completion"] for r in rows], [r["reference"] for r in rows], args.workers)
    seconds = time.perf_counter() - started
    if args.output:
        with args.output.open("w") as out:
            for verdict in verdicts:
                out.write(json.dumps(asdict(verdict), ensure_ascii=False) + "\n")
    stats = verifiers.BatchStats.of(verdicts)
    print(
        f"{stats.total} rows: {stats.correct} correct, {stats.total - stats.correct} not correct "
        f"({stats.timeouts} timeouts, {stats.errors} errors) in {seconds:.1f} s, {stats.total / seconds:.0f}/s"
    )
    print("reasons: " + ", ".join(f"{reason} {n}" for reason, n in sorted(stats.reasons.items())))
    if args.audit:
        status = _report_audit(rows, verdicts)
        if args.against:
            _report_against(args.against, rows, verdicts)
        return status
    return 0


def _report_audit(rows: list[dict[str, Any]], verdicts: list[Any]) -> int:
    confusion = Counter((bool(r["expected"]), v.correct) for r, v in zip(rows, verdicts, strict=True))
    agree = confusion[True, True] + confusion[False, False]
    print(f"agreement with labels: {agree}/{len(rows)} ({100 * agree / len(rows):.1f}%)")
    print("                 verifier: correct  not correct")
    print(f"label correct        {confusion[True, True]:>12} {confusion[True, False]:>12}")
    print(f"label not correct    {confusion[False, True]:>12} {confusion[False, False]:>12}")
    for line, (row, verdict) in enumerate(zip(rows, verdicts, strict=True), start=1):
        if verdict.correct != bool(row["expected"]):
            print(
                f"line {line}: label {int(bool(row['expected']))}, verifier {verdict.reason} "
                f"(extracted {verdict.extracted!r}, reference {row['reference']!r}): {_tail(row['completion'])}"
            )
    return 0 if agree == len(rows) else 1


def _math_verify_grades(rows: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Plain Math-Verify (``parse`` + ``verify``, its defaults) on each row, in this process;
    its own timeouts use signals, which work here because the command runs in the main thread."""
    import logging

    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    grades: list[tuple[str, Any]] = []
    for row in rows:
        reference = str(row["reference"])
        gold_text = reference if "$" in reference or "\\boxed" in reference else f"${reference}$"
        try:
            gold = math_verify.parse(gold_text, parsing_timeout=5)
            prediction = math_verify.parse(str(row["completion"]), parsing_timeout=5)
            correct = math_verify.verify(gold, prediction, timeout_seconds=5)
        except Exception as error:  # its parser raises on some inputs; the audit reports that
            grades.append((f"error ({type(error).__name__})", None))
            continue
        grades.append(("correct" if correct else "not correct", prediction[-1] if prediction else None))
    return grades


OTHER_GRADERS = {"math-verify": _math_verify_grades}


def _report_against(grader: str, rows: list[dict[str, Any]], verdicts: list[Any]) -> None:
    started = time.perf_counter()
    grades = OTHER_GRADERS[grader](rows)
    differ = [
        (line, row, verdict, grade)
        for line, (row, verdict, grade) in enumerate(zip(rows, verdicts, grades, strict=True), start=1)
        if verdict.correct != (grade[0] == "correct")
    ]
    print(
        f"against {grader}: {len(rows) - len(differ)}/{len(rows)} verdicts agree, {len(differ)} differ "
        f"({time.perf_counter() - started:.1f} s)"
    )
    for line, row, verdict, (grade, extracted) in differ:
        print(
            f"line {line}: label {int(bool(row['expected']))}, rlvr {verdict.reason} (extracted {verdict.extracted!r}), "
            f"{grader} {grade} (extracted {str(extracted)!r}), reference {row['reference']!r}: {_tail(row['completion'])}"
        )


def _tail(text: str, width: int = 120) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else "..." + flat[-width:]


def _read_rows(path: Path, need_label: bool) -> list[dict[str, Any]]:
    if not path.is_file():
        raise CLIError(f"{path} does not exist; give a JSON-lines file with one row per completion")
    fields = ("completion", "reference", "expected") if need_label else ("completion", "reference")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise CLIError(f"{path}:{number} is not JSON ({error})") from None
        missing = [name for name in fields if name not in row]
        if missing:
            raise CLIError(f"{path}:{number} lacks {', '.join(missing)}; each row needs {', '.join(fields)}")
        rows.append(row)
    if not rows:
        raise CLIError(f"{path} has no rows")
    return rows


def _options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CLIError(f"--option {pair!r} should be NAME=VALUE, e.g. require_boxed=true")
        try:
            options[name] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
        except json.JSONDecodeError:
            options[name] = value
    return options
