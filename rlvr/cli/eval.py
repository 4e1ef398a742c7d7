from __future__ import annotations

import argparse

from rlvr.cli import command, not_implemented


@command("eval")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Evaluate a model: pass@k, avg@n and maj@k with confidence intervals."""
    parser.set_defaults(run=not_implemented(7))
