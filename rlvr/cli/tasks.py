from __future__ import annotations

import argparse

from rlvr.cli import command, not_implemented


@command("tasks")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """List built-in tasks and show rendered prompts."""
    parser.set_defaults(run=not_implemented(5))
