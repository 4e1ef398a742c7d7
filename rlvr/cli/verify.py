from __future__ import annotations

import argparse

from rlvr.cli import command, not_implemented


@command("verify")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Check answers with a verifier (one answer, a file, or an audit against labels)."""
    parser.set_defaults(run=not_implemented(3))
