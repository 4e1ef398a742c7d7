from __future__ import annotations

import argparse

from rlvr.cli import command, not_implemented


@command("sandbox")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Run code in a sandbox back-end and check its isolation."""
    parser.set_defaults(run=not_implemented(4))
