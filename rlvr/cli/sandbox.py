from __future__ import annotations

import argparse
import sys
import warnings

from rlvr.cli import CLIError, command


@command("sandbox")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Run code in a sandbox back-end and check its isolation.

    rlvr sandbox run prog.py --backend bwrap --stdin "1 2"    # run a program, print its result
    rlvr sandbox check --backend docker                      # run the hostile-program suite
    rlvr sandbox list                                        # back-ends and whether each works here
    """
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="run a program and print its status, output and time")
    run.add_argument("file", help="the program")
    run.add_argument("--language", default=None,
                     help="python or cpp (default: cpp for .cpp/.cc/.cxx files, else python)")
    run.add_argument("--backend", default="auto", help="bwrap, docker, subprocess, or auto (default)")
    run.add_argument("--stdin", default=None, help="text for the program's stdin (default: none)")
    run.add_argument("--stdin-file", default=None, help="read the program's stdin from this file")
    run.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds (default 10)")
    run.add_argument("--memory-mb", type=int, default=512, help="memory limit in MiB (default 512)")
    run.set_defaults(run=_run)
    check = actions.add_parser("check", help="run hostile programs and print what was contained")
    check.add_argument("--backend", default="auto", help="bwrap, docker, subprocess, or auto (default)")
    check.set_defaults(run=_check)
    listing = actions.add_parser("list", help="list the back-ends and whether each works here")
    listing.set_defaults(run=_list)


def _sandbox(name: str, **limits: object):
    import sandboxes

    if name != "auto" and name not in sandboxes.available():
        raise CLIError(f"unknown sandbox back-end {name!r}; choose one of: auto, {', '.join(sandboxes.available())}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sandboxes.get(name, **limits)
    except sandboxes.SandboxError as error:
        raise CLIError(str(error)) from None


def _run(args: argparse.Namespace) -> int:
    try:
        code = open(args.file).read()
        stdin = open(args.stdin_file).read() if args.stdin_file else (args.stdin or "")
    except OSError as error:
        raise CLIError(f"cannot read {error.filename}: {error.strerror}") from None
    language = args.language or ("cpp" if args.file.endswith((".cpp", ".cc", ".cxx")) else "python")
    with _sandbox(args.backend, timeout=args.timeout, memory_mb=args.memory_mb) as box:
        try:
            result = box.run(code, stdin=stdin, language=language)
        except ValueError as error:
            raise CLIError(str(error)) from None
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    truncated = " (output truncated)" if result.truncated else ""
    print(f"[{box.name}] status={result.status} exit_code={result.exit_code} "
          f"wall_time={result.wall_time:.3f}s{truncated}", file=sys.stderr)
    return 0 if result.ok else 1


def _check(args: argparse.Namespace) -> int:
    from sandboxes._hostile import CASES, SUITE_LIMITS, Host

    escaped = 0
    with _sandbox(args.backend, **SUITE_LIMITS) as box:
        print(f"hostile programs against the {box.name} back-end (limits: {SUITE_LIMITS})")
        for case in CASES:
            if case.needs_isolation and not box.isolated:
                print(f"  n/a        {case.name} (the {box.name} back-end does not isolate)")
                continue
            with Host() as host:
                result = box.run(case.source(host))
                problem = case.check(result, host)
                if problem is None and host.leftover_processes(box.resident_pids()):
                    problem = "processes of the run survived it"
            escaped += problem is not None
            verdict = "contained " if problem is None else "ESCAPED   "
            print(f"  {verdict} {case.name}: status={result.status} in {result.wall_time:.2f}s"
                  + (f" -- {problem}" if problem else ""))
    print(f"{len(CASES) - escaped} contained, {escaped} escaped")
    return 1 if escaped else 0


def _list(args: argparse.Namespace) -> int:
    import sandboxes

    for name in sandboxes.available():
        reason = sandboxes.unavailable_reason(name)
        print(f"{name:12} {'works here' if reason is None else 'unavailable: ' + reason}")
    return 0
