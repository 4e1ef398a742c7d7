"""The ``rlvr`` command line. Each sub-command lives in its own module of this package and
registers itself with ``@command("name")``; :func:`main` discovers them, so adding a command is a
new file, not an edit here. Modules import heavy libraries inside their handlers so that
``rlvr --help`` stays fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rlvr.config import ConfigError
from rlvr.faults import RunStopped
from rlvr.registry import Registry, RegistryError

AddArguments = Callable[[argparse.ArgumentParser], None]
commands: Registry[AddArguments] = Registry("command", package="rlvr.cli")
command = commands.register


class CLIError(Exception):
    """An error to show the user as ``rlvr: error: ...`` with exit status 2 (no traceback)."""


def not_implemented(issue: int) -> Callable[[argparse.Namespace], int]:
    """Handler for a command that exists in the interface but is not built yet."""

    def run(args: argparse.Namespace) -> int:
        raise CLIError(f"`rlvr {args.command}` is not implemented yet (tracked in issue #{issue}).")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlvr", description="Train and evaluate reasoning models with verifiable rewards."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands.available():
        add_arguments = commands.get(name)
        doc = (add_arguments.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        sub_parser = sub.add_parser(
            name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (CLIError, ConfigError, RegistryError) as error:
        print(f"rlvr {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RunStopped as error:  # a fault or a stop signal the run handled: the message says what to do next
        print(f"rlvr {args.command}: stopped: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"rlvr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
