from __future__ import annotations

import argparse

from rlvr.cli import command, not_implemented


@command("demo")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo: a tiny model learns arithmetic reasoning with RLVR on the CPU, in minutes."""
    parser.set_defaults(run=not_implemented(8))
